<?php
// What the Drupal 7 module islandora_job does to submit a job (islandora_job_submit, _submit_background and
// includes/db.inc), with PDO configured as Drupal 7 configures it, outside Drupal. One job per line of stdin:
//   {"mode": "fg"|"bg", "job": NAME, "args": [...], "function": ALIAS (optional: the job's alias, as
//   islandora_job_function_name() gives it)}
// one JSON line per job on stdout: {"outcome": "deduped"|"submitted"|"failed", "result": ..., "code": N}.
// The site comes from the environment (never the command line: the password): DRUPAL_DSN, DRUPAL_DB_USER,
// DRUPAL_DB_PASSWORD, DRUPAL_TABLE, DRUPAL_BASE_URL, GEARMAN_PORT.
$dsn = getenv("DRUPAL_DSN");
$table = getenv("DRUPAL_TABLE");
$base_url = getenv("DRUPAL_BASE_URL");
$pgsql = strncmp($dsn, "pgsql:", 6) == 0;
// Drupal 7's connection options: exceptions, emulated prepares (both drivers), buffered queries (MySQL), UTF-8.
$options = array(PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION, PDO::ATTR_EMULATE_PREPARES => TRUE);
if (!$pgsql) {
  $options[PDO::MYSQL_ATTR_USE_BUFFERED_QUERY] = TRUE;
}
$db = new PDO($dsn, getenv("DRUPAL_DB_USER"), getenv("DRUPAL_DB_PASSWORD"), $options);
$db->exec("SET NAMES 'utf8'");

// islandora_job_format_payload(): plain json_encode, default flags; the uid as Drupal loads it (a string).
function format_payload($job_name, $args) {
  global $base_url;
  return json_encode(array("func" => $job_name, "args" => $args, "site" => $base_url, "uid" => "1"));
}

// _islandora_job_status_id_results(): WAITING rows whose data equals the payload (addcslashes on PostgreSQL).
function status_ids($data) {
  global $db, $table, $pgsql;
  $query = $db->prepare("SELECT status_id FROM $table WHERE state = :state AND data = :data");
  $query->execute(array(":state" => 0, ":data" => $pgsql ? addcslashes($data, '\\') : $data));
  return $query;
}

// islandora_job_ensure_job_deduping()
function ensure_job_deduping($data) {
  return !status_ids($data)->fetchColumn();
}

// islandora_job_insert_job_status(): db_insert; Drupal binds a blob as a LOB on PostgreSQL, as a string on MySQL.
function insert_job_status($data) {
  global $db, $table, $pgsql;
  $insert = $db->prepare("INSERT INTO $table (data) VALUES (:data)");
  $insert->bindValue(":data", $data, $pgsql ? PDO::PARAM_LOB : PDO::PARAM_STR);
  $insert->execute();
  return $db->lastInsertId($pgsql ? "{$table}_status_id_seq" : NULL);
}

// islandora_job_remove_job_status()
function remove_job_status($id) {
  global $db, $table;
  $db->prepare("DELETE FROM $table WHERE status_id = :id")->execute(array(":id" => $id));
}

$client = new GearmanClient();
$client->addServer("127.0.0.1", (int) getenv("GEARMAN_PORT"));
$client->setTimeout(60000);  // the module sets none; a test must end

while (($line = fgets(STDIN)) !== FALSE) {
  $job = json_decode($line, TRUE);
  $payload = format_payload($job["job"], $job["args"]);
  if (!ensure_job_deduping($payload)) {
    // "Job already queued; deduping": NULL in the foreground, FALSE in the background.
    echo json_encode(array("outcome" => "deduped", "payload" => $payload)), "\n";
    continue;
  }
  $function = isset($job["function"]) ? $job["function"] : $job["job"];
  if ($job["mode"] == "fg") {
    // islandora_job_submit(): the row, then doNormal; no transaction, and the row is never removed here.
    insert_job_status($payload);
    $result = $client->doNormal($function, $payload);
    $code = $client->returnCode();
    $outcome = $code == GEARMAN_SUCCESS ? "submitted" : "failed";
    echo json_encode(array("outcome" => $outcome, "result" => $result, "code" => $code, "payload" => $payload)), "\n";
    continue;
  }
  // islandora_job_submit_background(): the row and the submission in one db_transaction(), rolled back when the
  // submission fails; otherwise committed when the function returns, AFTER gearmand accepted the job, so a fast
  // worker can take the job before its row is visible. DRUPAL_COMMIT_DELAY_MS widens that window, as an enclosing
  // transaction of the site (a node save, a batch step) does: Drupal 7 nests db_transaction() as a savepoint.
  $db->beginTransaction();
  try {
    insert_job_status($payload);
    $result = $client->doBackground($function, $payload);
    $code = $client->returnCode();
    if ($code != GEARMAN_SUCCESS) {
      $db->rollBack();
      echo json_encode(array("outcome" => "failed", "code" => $code, "payload" => $payload)), "\n";
      continue;
    }
    usleep(1000 * (int) getenv("DRUPAL_COMMIT_DELAY_MS"));
    $db->commit();
    echo json_encode(array("outcome" => "submitted", "result" => $result, "code" => $code, "payload" => $payload)), "\n";
  }
  catch (Exception $e) {
    $db->rollBack();
    echo json_encode(array("outcome" => "failed", "code" => $client->returnCode(), "payload" => $payload)), "\n";
  }
}

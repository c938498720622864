<?php
// A PHP client exactly as the Drupal islandora_job module submits jobs (doNormal, doBackground, addTask +
// runTasks), against the Python worker. Prints one JSON document with what PHP saw.
// Usage: php worker_peer_client.php PORT
$port = (int)$argv[1];
$payload = function ($func, $args) {
    return json_encode(array("func" => $func, "args" => $args, "site" => "http://localhost", "uid" => 1));
};
$client = new GearmanClient();
$client->addServer("127.0.0.1", $port);
$client->setTimeout(20000);
$out = array();

$result = $client->doNormal("islandora_job_demo.add", $payload("islandora_job_demo.add", array(2, 3)));
$out["doNormal"] = array("result" => $result, "code" => $client->returnCode());

$result = $client->doNormal("islandora_job_demo.fail", $payload("islandora_job_demo.fail", array("no")));
$out["fail"] = array("result" => $result, "code" => $client->returnCode());

$result = $client->doNormal("islandora_job_demo.raise", $payload("islandora_job_demo.raise", array("boom")));
$out["raise"] = array("result" => $result, "code" => $client->returnCode());

$handle = $client->doBackground("islandora_job_demo.write_file",
    $payload("islandora_job_demo.write_file", array($argv[2], "from php")));
$out["doBackground"] = array("handle" => $handle, "code" => $client->returnCode());

$batch = array();
$client->setCompleteCallback(function ($task) use (&$batch) {
    $batch[$task->unique()] = array("status" => "complete", "data" => $task->data());
});
$client->setFailCallback(function ($task) use (&$batch) {
    $batch[$task->unique()] = array("status" => "fail");
});
for ($i = 0; $i < 10; $i++) {
    $client->addTask("islandora_job_demo.add", $payload("islandora_job_demo.add", array($i, 100)), null, "task-$i");
}
$client->addTask("islandora_job_demo.fail", $payload("islandora_job_demo.fail", array()), null, "task-fail");
$ok = $client->runTasks();
ksort($batch);
$out["runTasks"] = array("ok" => $ok, "tasks" => $batch);
$out["constants"] = array("SUCCESS" => GEARMAN_SUCCESS, "WORK_FAIL" => GEARMAN_WORK_FAIL,
                          "WORK_EXCEPTION" => GEARMAN_WORK_EXCEPTION);
echo json_encode($out), "\n";

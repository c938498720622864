<?php
// A PHP client (the gearman extension, as the Drupal module submits) for the persistent-runner tests.
// Usage: php runner_client.php PORT < JOBS, JOBS being a JSON list of [function, payload string]; prints a JSON list
// of {"result", "code"} in the same order (code: GEARMAN_SUCCESS, GEARMAN_WORK_FAIL, ...) and the constants.
$port = (int) $argv[1];
$jobs = json_decode(stream_get_contents(STDIN), TRUE);
$client = new GearmanClient();
$client->addServer("127.0.0.1", $port);
$client->setTimeout(30000);
$out = array();
foreach ($jobs as $job) {
  $result = $client->doNormal($job[0], $job[1]);
  $out[] = array("result" => $result, "code" => $client->returnCode());
}
echo json_encode(array("answers" => $out, "SUCCESS" => GEARMAN_SUCCESS, "WORK_FAIL" => GEARMAN_WORK_FAIL)), "\n";

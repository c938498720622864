<?php
// A PHP client (the gearman extension, as the Drupal module submits) sending crafted payloads whose "func" differs
// from the Gearman function. Prints one JSON document with what PHP saw.
// Usage: php func_override_client.php PORT
$port = (int)$argv[1];
$payload = function ($func, $args) {
    return json_encode(array("func" => $func, "args" => $args, "site" => "http://localhost", "uid" => "1"));
};
$client = new GearmanClient();
$client->addServer("127.0.0.1", $port);
$client->setTimeout(20000);
$out = array();
$call = function ($function, $data) use ($client) {
    $result = $client->doNormal($function, $data);
    return array("result" => $result, "code" => $client->returnCode());
};
// the attack: submitted to echo, asking for add
$out["override"] = $call("islandora_job_demo.echo", $payload("islandora_job_demo.add", array(2, 3)));
// the same job, honestly
$out["honest"] = $call("islandora_job_demo.add", $payload("islandora_job_demo.add", array(2, 3)));
// the original module's cron heartbeat: function ijh (the alias) carries func islandora_job_heartbeat
$out["heartbeat"] = $call("ijh", $payload("islandora_job_heartbeat", array("ping", time())));
$out["constants"] = array("SUCCESS" => GEARMAN_SUCCESS, "WORK_FAIL" => GEARMAN_WORK_FAIL);
echo json_encode($out), "\n";

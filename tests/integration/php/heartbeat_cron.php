<?php
// The Drupal module's cron heartbeat, as hook_cron submits it: islandora_job_submit_background('islandora_job_heartbeat',
// 'ping', time()), i.e. json_encode of func/args/site/uid with default flags (so "/" is "\/", uid a string as loaded
// from the database), sent with doBackground to the job's alias, Gearman function "ijh".
// Usage: php heartbeat_cron.php PORT [COUNT]   prints one job handle per line
$port = (int)$argv[1];
$count = isset($argv[2]) ? (int)$argv[2] : 1;
$base_url = "http://localhost/drupal";
$client = new GearmanClient();
$client->addServer("127.0.0.1", $port);
for ($i = 0; $i < $count; $i++) {
    $payload = json_encode(array(
        "func" => "islandora_job_heartbeat",
        "args" => array("ping", time()),
        "site" => $base_url,
        "uid" => "0",
    ));
    $handle = $client->doBackground("ijh", $payload);
    if ($client->returnCode() != GEARMAN_SUCCESS) {
        fwrite(STDERR, "doBackground failed: " . $client->error() . "\n");
        exit(1);
    }
    echo $handle, "\n";
}

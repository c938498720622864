<?php
// A web request (molecule verify: through php-fpm with cgi-fcgi, and through Apache's mod_php): is the gearman
// extension loaded in the running server, and can a page submit an islandora_job job with it, as Drupal does?
// One JSON document.
header('Content-Type: application/json');
$out = ['sapi' => PHP_SAPI, 'gearman' => extension_loaded('gearman')];
if ($out['gearman']) {
    $client = new GearmanClient();
    $client->addServers('127.0.0.1:4730');
    $client->setTimeout(15000);
    $payload = json_encode(['func' => 'islandora_job.ping', 'args' => [], 'site' => 'default', 'uid' => 1]);
    $out['ping'] = $client->doNormal('islandora_job.ping', $payload);
    $out['rc'] = $client->returnCode();
}
echo json_encode($out), "\n";

<?php
// A PHP worker (pecl gearman) that sends partial output before its result, as Drupal-side workers may:
//   php_data  $job->sendData('a'), then returns 'b'
// Usage: php data_worker.php HOST:PORT   prints "ready" once it has registered
require __DIR__ . '/serve.php';
$worker = connected_worker();
$worker->addFunction('php_data', function (GearmanJob $job) {
    $job->sendData('a');
    return 'b';
});
serve($worker);

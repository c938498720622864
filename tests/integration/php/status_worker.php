<?php
// A PHP worker (pecl gearman) that reports its progress, as a long Drupal-side job may:
//   php_progress  $job->sendStatus(1, 4), (2, 4), (4, 4) a moment apart, then returns 'done'
// Usage: php status_worker.php HOST:PORT   prints "ready" once it has registered
require __DIR__ . '/serve.php';
$worker = connected_worker();
$worker->addFunction('php_progress', function (GearmanJob $job) {
    foreach (array(1, 2, 4) as $done) {
        $job->sendStatus($done, 4);
        usleep(50000);
    }
    return 'done';
});
serve($worker);

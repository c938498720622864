<?php
// A PHP worker (pecl gearman) that reports its progress, as a long Drupal-side job may:
//   php_progress  $job->sendStatus(1, 4), (2, 4), (4, 4) a moment apart, then returns 'done'
// Usage: php status_worker.php HOST:PORT   prints "ready" once it has registered
list($host, $port) = explode(':', $argv[1]);
$worker = new GearmanWorker();
$worker->addServer($host, (int) $port);
$worker->addFunction('php_progress', function (GearmanJob $job) {
    foreach (array(1, 2, 4) as $done) {
        $job->sendStatus($done, 4);
        usleep(50000);
    }
    return 'done';
});
fwrite(STDOUT, "ready\n");
fflush(STDOUT);
while (true) {
    if (!$worker->work() && $worker->returnCode() == GEARMAN_COULD_NOT_CONNECT) {
        usleep(100000);
    }
}

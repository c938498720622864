<?php
// A PHP worker (pecl gearman) that sends partial output before its result, as Drupal-side workers may:
//   php_data  $job->sendData('a'), then returns 'b'
// Usage: php data_worker.php HOST:PORT   prints "ready" once it has registered
list($host, $port) = explode(':', $argv[1]);
$worker = new GearmanWorker();
$worker->addServer($host, (int) $port);
$worker->addFunction('php_data', function (GearmanJob $job) {
    $job->sendData('a');
    return 'b';
});
fwrite(STDOUT, "ready\n");
fflush(STDOUT);
while (true) {
    if (!$worker->work() && $worker->returnCode() == GEARMAN_COULD_NOT_CONNECT) {
        usleep(100000);
    }
}

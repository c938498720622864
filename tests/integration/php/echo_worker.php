<?php
// A worker written with the PHP gearman extension (pecl-gearman), the peer Drupal sites use.
// Usage: php echo_worker.php HOST:PORT
//   php_echo  returns the workload unchanged
//   php_fail  reports WORK_FAIL
//   php_warn_fail  sends WORK_WARNING "disk full", then WORK_FAIL
//   php_exception  reports WORK_EXCEPTION with the text "php says no"
//   php_upper returns the payload's args[0] upper-cased (decodes the islandora_job JSON)
require __DIR__ . '/serve.php';
$worker = connected_worker();
$worker->addFunction('php_echo', function (GearmanJob $job) {
    return $job->workload();
});
$worker->addFunction('php_fail', function (GearmanJob $job) {
    $job->setReturn(GEARMAN_WORK_FAIL);
    return '';
});
$worker->addFunction('php_warn_fail', function (GearmanJob $job) {
    $job->sendWarning('disk full');
    $job->setReturn(GEARMAN_WORK_FAIL);
    return '';
});
$worker->addFunction('php_exception', function (GearmanJob $job) {
    $job->sendException('php says no');
    $job->setReturn(GEARMAN_WORK_EXCEPTION);
    return '';
});
$worker->addFunction('php_upper', function (GearmanJob $job) {
    $payload = json_decode($job->workload(), true);
    return strtoupper($payload['args'][0]);
});
serve($worker);

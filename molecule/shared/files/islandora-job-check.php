<?php
// Client side of the molecule scenarios: the PHP gearman extension (php-gearman) submitting islandora_job payloads,
// as the Drupal islandora_job module does. Prints one JSON document; the verify playbooks assert on it.
//   php islandora-job-check.php calls SERVERS          doNormal, doBackground, addTask/runTasks, a failing job
//   php islandora-job-check.php submit SERVERS DIR N   N background write_file jobs into DIR (persistence test)
//   php islandora-job-check.php ping SERVERS           a ping and an add through SERVERS
//   php islandora-job-check.php flow SERVERS SECONDS   add jobs one after another for SECONDS; counts failures
// SERVERS: "host:port,host:port" (GearmanClient::addServers, every server the site knows).

function payload(string $func, array $args): string {
    // The original module's payload: json_encode of func, args, site, uid.
    return json_encode(['func' => $func, 'args' => $args, 'site' => 'default', 'uid' => 1]);
}

function client(string $servers): GearmanClient {
    $client = new GearmanClient();
    // false: do not connect at once to set the exceptions option (php-gearman 2.x throws "Failed to set exception
    // option" when one of the servers is down, the very case a site gives several servers for).
    $client->addServers($servers, false);
    $client->setTimeout(60000);
    return $client;
}

$mode = $argv[1] ?? '';
$servers = $argv[2] ?? '127.0.0.1:4730';
$out = [];

if ($mode === 'calls') {
    $client = client($servers);
    $normal = function (string $func, array $args) use ($client) {
        $result = $client->doNormal($func, payload($func, $args));
        return ['result' => $result, 'rc' => $client->returnCode(), 'success' => $client->returnCode() === GEARMAN_SUCCESS];
    };
    $out['ping'] = $normal('islandora_job.ping', []);
    $out['echo'] = $normal('islandora_job_demo.echo', ['grüße, 💾']);
    $out['add'] = $normal('islandora_job_demo.add', [2, 3, 37]);
    $out['fail'] = $normal('islandora_job_demo.fail', ['on purpose']);
    $out['fail']['work_fail'] = $out['fail']['rc'] === GEARMAN_WORK_FAIL;

    // doBackground: a file written by the worker, the handle known until it is done.
    $path = '/var/lib/islandora-job/molecule-background.txt';
    $text = 'background ' . bin2hex(random_bytes(8));
    $handle = $client->doBackground('islandora_job_demo.write_file', payload('islandora_job_demo.write_file', [$path, $text]));
    $out['background'] = ['handle' => $handle, 'rc' => $client->returnCode(), 'path' => $path, 'text' => $text];
    $deadline = microtime(true) + 30;
    do {
        $status = $client->jobStatus($handle);
        if (!$status[0]) break;
        usleep(50000);
    } while (microtime(true) < $deadline);
    $out['background']['done'] = !$status[0];
    $out['background']['file'] = @file_get_contents($path);

    // addTask/runTasks: several jobs at once, results matched by unique key, one failure among them.
    $tasks = ['complete' => [], 'fail' => []];
    $client->setCompleteCallback(function (GearmanTask $task) use (&$tasks) { $tasks['complete'][$task->unique()] = $task->data(); });
    $client->setFailCallback(function (GearmanTask $task) use (&$tasks) { $tasks['fail'][] = $task->unique(); });
    for ($i = 1; $i <= 10; $i++) {
        $client->addTask('islandora_job_demo.add', payload('islandora_job_demo.add', [$i, $i]), null, "molecule-add-$i");
    }
    $client->addTask('islandora_job_demo.fail', payload('islandora_job_demo.fail', ['task']), null, 'molecule-fail-task');
    $out['tasks'] = ['ran' => $client->runTasks(), 'rc' => $client->returnCode()] + $tasks;
} elseif ($mode === 'ping') {
    // One doNormal ping and one add through the given servers.
    $client = client($servers);
    $client->setTimeout(15000);
    $out['ping'] = $client->doNormal('islandora_job.ping', payload('islandora_job.ping', []));
    $out['ping_rc'] = $client->returnCode();
    $out['add'] = $client->doNormal('islandora_job_demo.add', payload('islandora_job_demo.add', [20, 22]));
    $out['add_rc'] = $client->returnCode();
} elseif ($mode === 'flow') {
    // doNormal jobs one after another for SECONDS (argv[3]), each with a fresh client as a web request would;
    // counts the jobs that did not come back right.
    $until = microtime(true) + (float)($argv[3] ?? 30);
    $out = ['ok' => 0, 'failed' => 0, 'errors' => []];
    $i = 0;
    while (microtime(true) < $until) {
        $i++;
        $client = client($servers);
        $client->setTimeout(30000);
        $result = @$client->doNormal('islandora_job_demo.add', payload('islandora_job_demo.add', [$i, 1]));
        if ($client->returnCode() === GEARMAN_SUCCESS && (int)$result === $i + 1) {
            $out['ok']++;
        } else {
            $out['failed']++;
            if (count($out['errors']) < 20) $out['errors'][] = "job $i: rc " . $client->returnCode() . ' ' . $client->error();
        }
        usleep(20000);
    }
} elseif ($mode === 'submit') {
    $dir = $argv[3];
    $count = (int)($argv[4] ?? 50);
    $client = client($servers);
    $out['jobs'] = [];
    for ($i = 1; $i <= $count; $i++) {
        $path = sprintf('%s/job-%03d.txt', $dir, $i);
        $text = "job $i " . bin2hex(random_bytes(8)) . "\n";
        $handle = $client->doBackground('islandora_job_demo.write_file',
            payload('islandora_job_demo.write_file', [$path, $text]), "molecule-persist-$i");
        if ($client->returnCode() !== GEARMAN_SUCCESS) {
            fwrite(STDERR, "submit $i failed: " . $client->error() . "\n");
            exit(1);
        }
        $out['jobs'][$path] = $text;
    }
} else {
    fwrite(STDERR, "usage: php islandora-job-check.php calls|ping|flow|submit SERVERS [DIR COUNT|SECONDS]\n");
    exit(2);
}
echo json_encode($out, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES), "\n";

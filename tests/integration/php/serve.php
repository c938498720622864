<?php
// What the PHP test workers here share (pecl gearman): a worker connected to HOST:PORT (the script's first
// argument), and the serving loop, which prints "ready" once the functions are added and serves until killed.

function connected_worker(): GearmanWorker
{
    list($host, $port) = explode(':', $GLOBALS['argv'][1]);
    $worker = new GearmanWorker();
    $worker->addServer($host, (int) $port);
    return $worker;
}

function serve(GearmanWorker $worker): void
{
    fwrite(STDOUT, "ready\n");
    fflush(STDOUT);
    // work() returns false after a job that failed, too: only a lost server is waited out.
    while (true) {
        if (!$worker->work() && $worker->returnCode() == GEARMAN_COULD_NOT_CONNECT) {
            usleep(100000);
        }
    }
}

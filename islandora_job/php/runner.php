<?php

/**
 * @file
 * The islandora-job persistent PHP runner: one bootstrap, many jobs.
 *
 * Started by the islandora-job worker for a [[command_jobs]] entry with
 * persistent = true, never by hand. Two ways to run it:
 *
 * - under drush: `drush --root=... --uri=... php-script RUNNER`. Drupal is
 *   bootstrapped around it (module_invoke_all exists): jobs come from
 *   hook_islandora_job_register_jobs(), as the drush router found them;
 * - any other PHP application: `php RUNNER --bootstrap FILE`. FILE is included
 *   once and returns an array mapping job name to callable.
 *
 * The conversation with the worker runs on file descriptors 3 (requests, read
 * here) and 4 (replies), never on stdout or stderr, so nothing a job prints and
 * no PHP warning can reach it. Each message is a frame: two 32-bit big-endian
 * lengths (header, data), a JSON header, then the data bytes. See
 * docs/worker.md ("The persistent PHP runner") for the whole protocol.
 */

final class IslandoraJobRunner {

  const MAX_HEADER = 1048576;
  const MAX_DATA = 268435456;
  const STATE_ERROR = -1;

  private $in;
  private $out;
  private $mode;
  private $jobs = array();
  /** The job in hand (its header), or NULL between jobs. */
  private $current = NULL;
  private $output = '';
  private $cap = 1048576;
  private $truncated = FALSE;
  private $obLevel = 0;
  private $statusId = NULL;
  private $defaultUser = NULL;

  public static function main() {
    $runner = new self();
    exit($runner->serve());
  }

  private function serve() {
    ini_set('display_errors', 'stderr');
    if (function_exists('pcntl_signal')) {
      // The worker stops the runner by closing fd 3 (or kills its process
      // group); a SIGTERM sent to every process of the service must not end a
      // job in hand.
      pcntl_signal(SIGTERM, SIG_IGN);
      pcntl_signal(SIGINT, SIG_IGN);
      pcntl_signal(SIGHUP, SIG_IGN);
    }
    $this->in = @fopen('php://fd/3', 'rb');
    $this->out = @fopen('php://fd/4', 'wb');
    if (!$this->in || !$this->out) {
      fwrite(STDERR, "islandora-job runner: file descriptors 3 and 4 are not open: the islandora-job worker starts this script\n");
      return 2;
    }
    register_shutdown_function(array($this, 'shutdown'));
    try {
      $this->bootstrap();
    }
    catch (Throwable $e) {
      $this->send(array('type' => 'error', 'reason' => self::describe($e)));
      return 1;
    }
    $this->send(array(
      'type' => 'ready',
      'pid' => getmypid(),
      'mode' => $this->mode,
      'php' => PHP_VERSION,
    ));
    while (($frame = $this->receive()) !== NULL) {
      list($header, $data) = $frame;
      if (!isset($header['type']) || $header['type'] !== 'job') {
        fwrite(STDERR, "islandora-job runner: unexpected request; stopping\n");
        return 1;
      }
      $reply = $this->run($header, $data);
      $this->send($reply);
      if (!empty($reply[0]['runner_ending'])) {
        return 0;
      }
    }
    return 0;
  }

  private function bootstrap() {
    if (function_exists('module_invoke_all')) {
      $this->mode = 'drush';
      $this->jobs = module_invoke_all('islandora_job_register_jobs');
      global $user;
      $this->defaultUser = isset($user) ? $user : NULL;
      return;
    }
    $this->mode = 'bootstrap';
    $argv = isset($_SERVER['argv']) ? $_SERVER['argv'] : array();
    $position = array_search('--bootstrap', $argv, TRUE);
    if ($position === FALSE || !isset($argv[$position + 1])) {
      throw new RuntimeException('no Drupal around the runner and no --bootstrap FILE given');
    }
    $file = $argv[$position + 1];
    if (!is_file($file) || !is_readable($file)) {
      throw new RuntimeException("--bootstrap $file: not a readable file");
    }
    $jobs = (static function ($file) {
      return require $file;
    })($file);
    if (!is_array($jobs)) {
      throw new RuntimeException("--bootstrap $file: must return an array of job name => callable, not " . gettype($jobs));
    }
    foreach ($jobs as $name => $callable) {
      if (!is_callable($callable)) {
        throw new RuntimeException("--bootstrap $file: job '$name' is not callable");
      }
    }
    $this->jobs = $jobs;
  }

  /**
   * Runs one job: the reply frame (header, output).
   */
  private function run(array $header, $data) {
    $this->current = $header;
    $this->output = '';
    $this->truncated = FALSE;
    $this->statusId = NULL;
    $this->cap = isset($header['max_output']) ? (int) $header['max_output'] : 1048576;
    $payload = json_decode($data, TRUE);
    if (!is_array($payload) || !isset($payload['func']) || !is_string($payload['func'])) {
      return $this->finish('exception', 'payload is not an islandora_job payload (a JSON object with func)');
    }
    $args = isset($payload['args']) && is_array($payload['args']) ? array_values($payload['args']) : array();
    $callable = $this->resolve($payload['func']);
    if ($callable === NULL) {
      return $this->finish('exception', "unknown job '{$payload['func']}'");
    }
    if ($this->mode === 'drush' && function_exists('db_query')) {
      // A database connection that went away while the runner was idle (MySQL's wait_timeout) would fail the
      // job: check it first, and if it is gone let a fresh runner (a new connection) run the job instead.
      try {
        db_query('SELECT 1');
      }
      catch (Throwable $e) {
        $reply = $this->finish('retry', 'database connection lost: ' . self::describe($e));
        $reply[0]['runner_ending'] = TRUE;
        return $reply;
      }
    }
    $this->obLevel = ob_get_level();
    ob_start(array($this, 'collect'), 65536);
    try {
      if ($this->mode === 'drush') {
        $this->becomeUser(isset($header['uid']) ? $header['uid'] : NULL);
        $this->startStatus($data);
      }
      $value = call_user_func_array($callable, $args);
      $this->endOutput();
      $this->output($value);
      $this->endStatus(TRUE);
      return $this->finish('complete', '');
    }
    catch (Throwable $e) {
      $this->endOutput();
      try {
        $this->endStatus(FALSE);
      }
      catch (Throwable $status_error) {
        fwrite(STDERR, 'islandora-job runner: cannot record the job status: ' . self::describe($status_error) . "\n");
      }
      $reply = $this->finish('exception', self::describe($e));
      if (self::connectionLost($e)) {
        $reply[0]['runner_ending'] = TRUE;  // The next job gets a fresh runner, with a new connection.
      }
      return $reply;
    }
  }

  /**
   * The callable for a payload's func: its name, or an alias.
   */
  private function resolve($func) {
    if ($this->mode !== 'drush') {
      return isset($this->jobs[$func]) ? $this->jobs[$func] : NULL;
    }
    $name = NULL;
    if (isset($this->jobs[$func])) {
      $name = $func;
    }
    else {
      foreach ($this->jobs as $candidate => $job) {
        if (isset($job['alias']) && $job['alias'] === $func) {
          $name = $candidate;
          break;
        }
      }
    }
    if ($name === NULL) {
      return NULL;
    }
    $job = $this->jobs[$name];
    module_load_include($job['type'], $job['module'], isset($job['name']) ? $job['name'] : NULL);
    return $name;
  }

  /**
   * Drush's --user=UID, per job: the payload's user (the worker checked it).
   */
  private function becomeUser($uid) {
    global $user;
    if ($uid === NULL) {
      $user = $this->defaultUser;
      return;
    }
    $account = user_load((int) $uid);
    if (!$account) {
      throw new RuntimeException("user $uid does not exist");
    }
    $user = $account;
  }

  private function startStatus($data) {
    module_load_include('inc', 'islandora_job', 'includes/db');
    if (function_exists('islandora_job_start_job_status')) {
      $this->statusId = islandora_job_start_job_status($data);
    }
  }

  private function endStatus($ok) {
    if ($this->statusId === NULL || $this->statusId === FALSE) {
      return;
    }
    $id = $this->statusId;
    $this->statusId = NULL;
    if ($ok) {
      islandora_job_remove_job_status($id);
    }
    else {
      islandora_job_update_job_status($id, self::STATE_ERROR);
    }
  }

  /**
   * The output buffer's handler: keeps up to the cap, prints nothing.
   */
  public function collect($chunk) {
    $room = $this->cap - strlen($this->output);
    if (strlen($chunk) > $room) {
      $this->truncated = TRUE;
    }
    if ($room > 0) {
      $this->output .= substr($chunk, 0, $room);
    }
    return '';
  }

  private function endOutput() {
    while (ob_get_level() > $this->obLevel) {
      if (!@ob_end_flush()) {
        break;
      }
    }
  }

  /**
   * The return value as the drush router echoed it; arrays/objects as JSON.
   */
  private function output($value) {
    if (is_array($value) || is_object($value)) {
      $text = json_encode($value, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PARTIAL_OUTPUT_ON_ERROR);
      $this->collect($text === FALSE ? '' : $text);
    }
    else {
      $this->collect((string) $value);
    }
  }

  private function finish($status, $reason) {
    $this->current = NULL;
    return array(
      array(
        'type' => 'result',
        'status' => $status,
        'reason' => $reason,
        'truncated' => $this->truncated,
      ),
      $status === 'complete' ? $this->output : '',
    );
  }

  /**
   * At exit: a job in hand called exit() or hit a fatal error.
   */
  public function shutdown() {
    if ($this->current === NULL) {
      return;
    }
    $error = error_get_last();
    $fatal = E_ERROR | E_PARSE | E_CORE_ERROR | E_COMPILE_ERROR | E_USER_ERROR | E_RECOVERABLE_ERROR;
    if ($error !== NULL && ($error['type'] & $fatal)) {
      $reason = "PHP fatal error: {$error['message']} in {$error['file']} on line {$error['line']}";
    }
    else {
      $reason = 'the job ended the runner (exit() or die())';
    }
    $this->endOutput();
    try {
      $this->endStatus(FALSE);
    }
    catch (Throwable $e) {
      fwrite(STDERR, 'islandora-job runner: cannot record the job status: ' . self::describe($e) . "\n");
    }
    list($header, $data) = $this->finish('exception', $reason);
    $header['runner_ending'] = TRUE;
    $this->send(array($header, $data));
  }

  /**
   * Whether an exception says the database connection is gone.
   */
  private static function connectionLost(Throwable $e) {
    for (; $e !== NULL; $e = $e->getPrevious()) {
      if (!($e instanceof PDOException)) {
        continue;
      }
      $driver_code = isset($e->errorInfo[1]) ? (int) $e->errorInfo[1] : 0;
      // MySQL/MariaDB 2006 (gone away) and 2013 (lost connection); SQLSTATE class 08: connection exceptions.
      if (in_array($driver_code, array(2006, 2013), TRUE) || strncmp((string) $e->getCode(), '08', 2) === 0
        || preg_match('/server has gone away|lost connection|server closed the connection|no connection to the server/i', $e->getMessage())) {
        return TRUE;
      }
    }
    return FALSE;
  }

  private static function describe(Throwable $e) {
    $text = $e->getMessage();
    return $text === '' ? get_class($e) : get_class($e) . ': ' . $text;
  }

  /**
   * Writes one frame: a header array, or array(header, data).
   */
  private function send(array $message) {
    if (isset($message['type'])) {
      $message = array($message, '');
    }
    list($header, $data) = $message;
    $json = json_encode($header, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PARTIAL_OUTPUT_ON_ERROR);
    $this->write(pack('NN', strlen($json), strlen($data)) . $json . $data);
  }

  private function write($bytes) {
    while ($bytes !== '') {
      $written = @fwrite($this->out, $bytes);
      if ($written === FALSE || $written === 0) {
        exit(1);  // The worker is gone.
      }
      $bytes = (string) substr($bytes, $written);
    }
    fflush($this->out);
  }

  /**
   * Reads one frame: array(header, data), or NULL at the end of the input.
   */
  private function receive() {
    $lengths = $this->read(8);
    if ($lengths === NULL) {
      return NULL;
    }
    list(, $header_length, $data_length) = unpack('N2', $lengths);
    if ($header_length > self::MAX_HEADER || $data_length > self::MAX_DATA) {
      fwrite(STDERR, "islandora-job runner: frame too large; stopping\n");
      return NULL;
    }
    $header = json_decode((string) $this->read($header_length), TRUE);
    $data = $data_length ? $this->read($data_length) : '';
    if (!is_array($header) || $data === NULL) {
      return NULL;
    }
    return array($header, $data);
  }

  private function read($length) {
    $bytes = '';
    while (strlen($bytes) < $length) {
      $chunk = fread($this->in, $length - strlen($bytes));
      if ($chunk === FALSE || $chunk === '') {
        return NULL;
      }
      $bytes .= $chunk;
    }
    return $bytes;
  }

}

IslandoraJobRunner::main();

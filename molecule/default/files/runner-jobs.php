<?php

/**
 * @file
 * A small PHP application for the persistent runner on the default scenario's host.
 *
 * The worker starts `php -d pcre.jit=0 RUNNER --bootstrap /etc/islandora-job/jobs.php` once per worker process and
 * command entry; this file is included once by each runner and returns its jobs. Every result names the runner's
 * pid and how many jobs that runner has served, so verify.yml can show one long-lived process serving many jobs.
 */

$served = 0;
$report = function (array $fields) use (&$served) {
  $served++;
  return $fields + array('pid' => getmypid(), 'served' => $served);
};

return array(
  'runner.echo' => function (...$args) use ($report) {
    return $report(array('args' => $args));
  },
  // Regular expressions under the unit's MemoryDenyWriteExecute=yes. The runner runs with pcre.jit=0 (argv), so
  // the first match is interpreted. Then the JIT is switched on for one new pattern: PCRE must allocate memory
  // that is writable and executable, the unit forbids it, and PHP warns and matches without the JIT. The warning
  // is caught here, so verify sees that the restriction is in force and that the match is still right.
  'runner.regex' => function ($subject) use ($report) {
    $matched = preg_match('/^([\p{L}.]+)-(\d+)@((?:[a-z0-9-]+\.)+[a-z]{2,})$/u', $subject, $groups);
    $warning = NULL;
    set_error_handler(function ($level, $message) use (&$warning) {
      $warning = $message;
      return TRUE;
    });
    $jit = ini_get('pcre.jit');
    ini_set('pcre.jit', '1');
    try {
      $token = uniqid('', TRUE);
      $probe = preg_match('/(?:x|y)+z{2,}' . preg_quote($token, '/') . '$/', 'xyxyzzz' . $token);
    }
    finally {
      ini_set('pcre.jit', $jit);
      restore_error_handler();
    }
    return $report(array(
      'pcre_jit' => $jit,
      'matched' => $matched,
      'groups' => array_slice($groups, 1),
      'jit_probe' => array('matched' => $probe, 'warning' => $warning),
    ));
  },
);

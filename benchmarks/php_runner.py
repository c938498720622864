"""The persistent PHP runner against a bootstrap per job (issue 13): ``python -m benchmarks.php_runner [--quick]``.

Against a stand-in Drupal site whose bootstrap takes 0.5 s (``usleep`` in the drush stand-in of the tests,
``ISLANDORA_STANDIN_BOOT_USEC``), one worker process each, side by side on one gearmand:

* jobs/s of the persistent runner (``persistent = true``, ``drush php-script RUNNER``), of the per-job bridge
  (``argv = [drush, ..., islandora-job-router]``) and of ``gearman -w -- drush ... islandora-job-router`` (the
  original's way), all running the same job (``testjobs_truth``, returns TRUE);
* the overhead per job of the runner over a direct PHP call: the runner driven in this process (no gearmand)
  against the same job called in a PHP loop; and the round trip through gearmand against a Python no-op job in the
  same kind of worker process;
* the runner's RSS across 5,000 jobs (``max_jobs`` above that, so it is never replaced).

Figures only, nothing asserted (``--write`` puts the table in docs/benchmarks.md between this module's markers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import LoadClient, Processes, bench_env, start_pool, wait_workers, worker_config
from islandora_job.worker import config as config_module
from islandora_job.worker.bridge import command_jobs, run_command
from islandora_job.worker.persistent import PersistentJob, start_runners
from islandora_job.worker.router import Assignment
from tests.support.gearmand import Gearmand

REPO = Path(__file__).resolve().parents[1]
STANDIN = REPO / "tests" / "integration" / "drupal_standin"
DRUSH = str(STANDIN / "drush")
RUNNER = str(REPO / "islandora_job" / "php" / "runner.php")
BOOT_USEC = 500_000
PAYLOAD = b'{"func":"testjobs_truth","args":[],"site":null,"uid":"1"}'
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- php_runner.py begin -->", "<!-- php_runner.py end -->"


def drush(*command: str) -> list[str]:
    return [DRUSH, f"--root={STANDIN}", "--user=1", *command]


def entry(name: str, argv: list[str], persistent: bool) -> str:
    keys = "persistent = true\nmax_jobs = 1000000\n" if persistent else ""
    return f"[[command_jobs]]\nname = {json.dumps(name)}\nargv = {json.dumps(argv)}\ntimeout = 60\n{keys}"


def throughput(server: Gearmand, work: Path, quick: bool) -> dict[str, float]:
    """Jobs/s of the three ways, interleaved round by round."""
    env = bench_env(ISLANDORA_STANDIN_BOOT_USEC=str(BOOT_USEC))
    procs = Processes()
    try:
        tails = {
            "p_truth": entry("p_truth", drush("php-script", RUNNER), True),
            "b_truth": entry("b_truth", drush("islandora-job-router"), False),
        }
        for name, tail in tails.items():  # one process each: a pool per contender
            config = worker_config(work / f"{name}.toml", [server.address], concurrency=1, tail=tail)
            start_pool(procs, config, work / f"{name}.log", env=env)
        gearman = ["gearman", "-h", "127.0.0.1", "-p", str(server.port), "-w", "-f", "c_truth", "--"]
        procs.start([*gearman, *drush("islandora-job-router")], env=env)
        for function in ("p_truth", "b_truth", "c_truth"):
            wait_workers(server.port, function, 1, timeout=60)
        client = LoadClient(server.port)
        rates: dict[str, list[float]] = {"p_truth": [], "b_truth": [], "c_truth": []}
        client.foreground(b"p_truth", PAYLOAD, 50)
        for round_no in range(2 if quick else 3):
            for function in rates if round_no % 2 == 0 else list(rates)[::-1]:
                jobs = (1000 if quick else 3000) if function == "p_truth" else (4 if quick else 8)
                seconds, failed = client.foreground(function.encode(), PAYLOAD, jobs, window=50)
                if failed:
                    print(f"{function}: {failed} job(s) failed", file=sys.stderr)
                rates[function].append(jobs / seconds)
                print(f"  {function}: {jobs / seconds:.1f} jobs/s", file=sys.stderr)
        latency = {
            "p_truth": statistics.median(client.round_trips(b"p_truth", PAYLOAD, 500 if quick else 2000)),
        }
        client.close()
    finally:
        procs.stop_all()
    figures = {name: statistics.median(values) for name, values in rates.items()}
    figures["p_latency_ms"] = latency["p_truth"] * 1000
    figures["py_latency_ms"] = python_latency(server, work, quick) * 1000
    return figures


def python_latency(server: Gearmand, work: Path, quick: bool) -> float:
    """Median round trip of a Python no-op job in an islandora-job worker process: the worker's own share."""
    procs = Processes()
    try:
        config = worker_config(work / "py.toml", [server.address], concurrency=1, top='multisite_prefixes = ["py"]')
        start_pool(procs, config, work / "py.log")
        wait_workers(server.port, "py_nop", 1, timeout=60)
        client = LoadClient(server.port)
        client.foreground(b"py_nop", b'{"func":"nop","args":[]}', 100)
        value = statistics.median(client.round_trips(b"py_nop", b'{"func":"nop","args":[]}', 500 if quick else 2000))
        client.close()
        return value
    finally:
        procs.stop_all()


def in_process(jobs: int) -> dict[str, object]:
    """The runner driven from this process, no gearmand: µs per job, and its RSS every 500 jobs."""
    settings = {
        "command_jobs": [
            {"names": ["truth"], "argv": drush("php-script", RUNNER), "persistent": True, "max_jobs": jobs * 2}
        ]
    }
    bridge = command_jobs(config_module.build(settings, "bench").command_jobs)
    start_runners(bridge)
    job = bridge["truth"]
    assert isinstance(job, PersistentJob)
    assignment = Assignment("truth", "H:bench", "", PAYLOAD)
    for _ in range(200):
        job.run(assignment, None)
    process = job.runner.process
    assert process is not None
    rss = [(0, process.rss_mb() or 0.0)]
    started = time.perf_counter()
    for done in range(1, jobs + 1):
        outcome = job.run(assignment, None)
        if not outcome.ok:
            raise RuntimeError(f"job failed: {outcome.reason}")
        if done % 500 == 0:
            rss.append((done, process.rss_mb() or 0.0))
    per_job = (time.perf_counter() - started) / jobs
    job.runner.stop()
    return {"us_per_job": per_job * 1e6, "rss": rss}


DIRECT = """
require getenv('ROOT') . '/includes/bootstrap.inc';
drupal_bootstrap_full();
module_load_include('inc', 'testjobs', 'includes/jobs');
$n = (int) getenv('N');
$start = hrtime(TRUE);
for ($i = 0; $i < $n; $i++) {
  ob_start();
  echo call_user_func_array('testjobs_truth', array());
  ob_end_clean();
}
echo (hrtime(TRUE) - $start) / $n / 1000;
"""


def direct_call_us(calls: int) -> float:
    """µs per call of the same job in a PHP loop (with an output buffer, as a router echoes the result)."""
    env = {**os.environ, "ROOT": str(STANDIN), "N": str(calls), "ISLANDORA_STANDIN_DB": ":memory:"}
    done = subprocess.run(["php", "-r", DIRECT], capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.strip())


def spawn_costs(rounds: int, starts: int) -> dict[str, float]:
    """ms per start of ``true`` with three pipes: ``subprocess.Popen(start_new_session=True)`` (the per-job bridge
    before issue 13) against :func:`islandora_job.worker.bridge.run_command` (posix_spawn), interleaved."""

    def popen() -> None:
        pipe = subprocess.PIPE
        process = subprocess.Popen(["true"], stdin=pipe, stdout=pipe, stderr=pipe, start_new_session=True)
        process.communicate()

    def spawn() -> None:
        run_command(["true"], b"", 10.0, 1024)

    times: dict[str, list[float]] = {"popen": [], "posix_spawn": []}
    for _ in range(rounds):
        for name, start in (("popen", popen), ("posix_spawn", spawn)):
            began = time.perf_counter()
            for _ in range(starts):
                start()
            times[name].append((time.perf_counter() - began) / starts * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def render(fig: dict[str, object]) -> str:
    t = fig["throughput"]
    ip = fig["in_process"]
    assert isinstance(t, dict) and isinstance(ip, dict)
    rss = ip["rss"]
    assert isinstance(rss, list)
    per_job = float(ip["us_per_job"])
    direct = float(fig["direct_us"])  # type: ignore[arg-type]
    spawn = fig["spawn"]
    assert isinstance(spawn, dict)
    lines = [
        BEGIN,
        f"Generated by `python -m benchmarks.php_runner` ({fig['generated']}; stand-in site bootstrap "
        f"{BOOT_USEC / 1e6:g} s; one worker process each; load average at start {fig['load']}).",
        "",
        "| way | jobs/s | ratio to the per-job bridge |",
        "|---|---|---|",
    ]
    base = t["b_truth"]
    for key, label in (
        ("p_truth", "persistent runner (`persistent = true`, `drush php-script RUNNER`)"),
        ("b_truth", "per-job bridge (`argv = [drush, ..., islandora-job-router]`)"),
        ("c_truth", "`gearman -w -- drush ... islandora-job-router`"),
    ):
        lines.append(f"| {label} | {t[key]:.2f} | {t[key] / base:.1f}x |")
    lines += [
        "",
        f"Overhead of the runner over a direct PHP call: {per_job:.0f} µs per job driven from Python without "
        f"gearmand, against {direct:.1f} µs for the call in a PHP loop: **{(per_job - direct) / 1000:.3f} ms**. "
        f"Through gearmand, one job at a time: {t['p_latency_ms']:.3f} ms round trip (p50) against "
        f"{t['py_latency_ms']:.3f} ms for a Python no-op job in the same worker: the runner adds "
        f"{t['p_latency_ms'] - t['py_latency_ms']:.3f} ms.",
        "",
        "RSS of the runner (MiB) across "
        + f"{rss[-1][0]:,} jobs: "
        + ", ".join(f"{n:,}: {mb:.1f}" for n, mb in rss[: -1 : max(1, len(rss) // 5)])
        + f", {rss[-1][0]:,}: {rss[-1][1]:.1f}.",
        "",
        f"Starting a command with three pipes (`true`): `subprocess.Popen(start_new_session=True)` "
        f"{spawn['popen']:.2f} ms, `posix_spawn` with `setsid` (the bridge now) {spawn['posix_spawn']:.2f} ms.",
        END,
    ]
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN in doc:
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _m: text, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text + "\n"
    DOC.write_text(doc)


def run(quick: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        work = Path(tmp)
        server = Gearmand(work)
        server.start()
        try:
            load = f"{os.getloadavg()[0]:.1f}"
            print("throughput ...", file=sys.stderr)
            tput = throughput(server, work, quick)
        finally:
            if server.process is not None:
                server.process.kill()
                server.process.wait()
    os.environ.setdefault("ISLANDORA_STANDIN_DB", ":memory:")
    print("in process ...", file=sys.stderr)
    ip = in_process(1000 if quick else 5000)
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": load,
        "throughput": tput,
        "in_process": ip,
        "direct_us": direct_call_us(20000),
        "spawn": spawn_costs(3 if quick else 7, 100 if quick else 300),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer jobs")
    parser.add_argument("--write", action="store_true", help="put the table in docs/benchmarks.md")
    options = parser.parse_args()
    text = render(run(options.quick))
    if options.write:
        write_doc(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

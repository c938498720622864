"""A Python job's scalar result is what PHP's ``echo`` prints for it, checked against the real ``php``.

The drush router echoed a job's return value; Drupal code tests it for truthiness, so ``False`` must reach PHP as
``""`` (PHP's ``"false"`` is true) and a float as PHP prints it. Hundreds of doubles, chosen and random, are handed to
one ``php`` process bit for bit (``unpack('E', ...)``, no decimal literal in between) and compared one by one.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from islandora_job.worker.php_echo import echo
from islandora_job.worker.router import to_bytes
from tests.support.gearmand import Gearmand
from tests.support.pool import running_pool

PHP = shutil.which("php") or "php"


def _chosen() -> list[float]:
    """Every layout rule and its edges: zeros, infinities, NaN, 10**k on both sides of precision 14, ties."""
    values = [0.0, -0.0, math.inf, -math.inf, math.nan, 1.0, 0.1, 0.5, 1.5, -1.5, 1 / 3, 2 / 3, 0.1 + 0.2]
    values += [1e20, 1e15, 1e14, 1e13, 123456789012345.0, 12345678901234.0, 99999999999999.5, 999999999999995.0]
    values += [1e-5, 1e-4, 1e-3, 2.5e-5, 0.00012345678901234, 5e-324, 2.2250738585072014e-308, sys.float_info.max]
    values += [12345678901234567890.0, 2.0**53, 2.0**53 + 2, 2.0**63, 2.0**64, 0.30000000000000004, 1e100, 1e-100]
    for power in range(-20, 25):
        base = 10.0**power
        values += [base, math.nextafter(base, 0), math.nextafter(base, math.inf), 9.99999999999995 * base]
    return values


def _random() -> list[float]:
    """Random doubles of every magnitude and every bit pattern (seeded: a failure is reproducible)."""
    rng = random.Random(20261203)
    values = [rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30) for _ in range(200)]
    values += [round(rng.uniform(-1e6, 1e6), rng.randint(0, 12)) for _ in range(100)]
    values += [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(200)]
    return values


FLOATS = _chosen() + _random()


@pytest.fixture(scope="module")
def php_floats() -> dict[bytes, bytes]:
    """What ``echo`` prints in PHP for each of FLOATS, keyed by the double's 8 bytes; one php process for all."""
    keys = [struct.pack(">d", value) for value in FLOATS]
    script = 'while (($line = fgets(STDIN)) !== false) { echo unpack("E", hex2bin(trim($line)))[1], "\\n"; }'
    run = subprocess.run(
        [PHP, "-n", "-r", script],
        input="".join(key.hex() + "\n" for key in keys).encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    lines = run.stdout.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(keys) + 1, run.stderr
    return dict(zip(keys, lines, strict=False))


@pytest.mark.parametrize("value", FLOATS, ids=[struct.pack(">d", v).hex() for v in FLOATS])
def test_a_float_result_is_what_php_echo_prints(value: float, php_floats: dict[bytes, bytes]) -> None:
    assert to_bytes(value) == php_floats[struct.pack(">d", value)], repr(value)


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("true", True),
        ("false", False),
        ("null", None),
        ("0", 0),
        ("-42", -42),
        ("PHP_INT_MAX", 2**63 - 1),
        ("PHP_INT_MIN", -(2**63)),
        ("1.0", 1.0),
        ("0.1", 0.1),
        ("1e20", 1e20),
        ("-1e20", -1e20),
        ("-0.0", -0.0),
        ("INF", math.inf),
        ("-INF", -math.inf),
        ("NAN", math.nan),
        ("1e15", 1e15),
        ("123456789012345.0", 123456789012345.0),
        ("0.00001", 0.00001),
    ],
)
def test_the_issues_cases_against_php_r_echo(literal: str, value: object) -> None:
    """The cases named in issue 11, each as ``php -r 'echo X;'`` with PHP's own literal."""
    php = subprocess.run([PHP, "-n", "-r", f"echo {literal};"], capture_output=True, timeout=30, check=True)
    assert to_bytes(value) == php.stdout


def test_booleans_are_what_drupal_tests_for_truthiness() -> None:
    """The change of issue 11: False was the text "false", which PHP treats as true."""
    assert (to_bytes(True), to_bytes(False), to_bytes(None)) == (b"1", b"", b"")
    assert echo(7) == b"7" and echo(True) == b"1"


def test_lists_and_dicts_stay_json_where_php_would_print_array() -> None:
    """A deliberate difference from PHP (docs/writing-jobs.md): structure is kept, as JSON."""
    assert to_bytes([True, None, 1.5]) == b"[true,null,1.5]"
    assert to_bytes({"ok": False}) == b'{"ok":false}'
    assert to_bytes("false") == b"false" and to_bytes(b"\x00") == b"\x00"


def test_php_donormal_sees_a_python_jobs_scalars_as_from_a_php_job(tmp_path: Path, gearmand: Gearmand) -> None:
    """End to end: what ``islandora_job_submit`` returns to Drupal, and whether PHP takes it as true."""
    kinds = ["true", "false", "none", "int", "float", "tiny"]
    code = (
        f'$c = new GearmanClient(); $c->addServer("127.0.0.1", {gearmand.port}); $c->setTimeout(20000); $out = [];'
        f"foreach ({json.dumps(kinds).replace('[', 'array(').replace(']', ')')} as $k) {{"
        '  $r = $c->doNormal("t.scalar", json_encode(array("func" => "t.scalar", "args" => array($k),'
        '    "site" => "http://localhost", "uid" => "1")));'
        "  $out[$k] = array($r, (bool) $r); }"
        "echo json_encode($out);"
    )
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.scalar", count=1)
        run = subprocess.run([PHP, "-r", code], capture_output=True, timeout=60, check=True)
    assert json.loads(run.stdout) == {
        "true": ["1", True],
        "false": ["", False],  # was "false", which PHP took as true
        "none": ["", False],
        "int": ["-7", True],
        "float": ["1.0E+20", True],
        "tiny": ["1.0E-5", True],
    }

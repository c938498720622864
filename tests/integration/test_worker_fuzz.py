"""Payload fuzzing through a real worker process: every job answered, the process alive, its memory flat."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from islandora_job.codec import Command
from tests.support.gearmand import running_gearmand
from tests.support.peers import PlainClient, payload
from tests.support.pool import running_pool

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"func": st.sampled_from(["islandora_job_demo.echo", "islandora_job_demo.add", "nope"]) | st.text(max_size=8)},
        optional={"args": json_values, "site": json_values, "uid": json_values},
    ).map(lambda v: json.dumps(v).encode()),
)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_fuzzed_payloads_are_all_answered_by_one_living_process(tmp_path: Path) -> None:
    with running_gearmand(tmp_path) as gearmand, running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "islandora_job_demo.echo", count=1)
        [child] = pool.children()
        client = PlainClient(gearmand.address, exceptions=False)
        seen = {"jobs": 0}
        try:
            warm = client.submit_many("islandora_job_demo.echo", [payload("islandora_job_demo.echo", "x")] * 200)
            assert all(a.ok for a in warm)
            rss_before = _rss_kb(child)

            @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(st.lists(payloads, min_size=10, max_size=40))
            def check(batch: list[bytes]) -> None:
                answers = client.submit_many("islandora_job_demo.echo", batch)
                assert len(answers) == len(batch)
                for data, answer in zip(batch, answers, strict=True):
                    assert answer.command in (Command.WORK_COMPLETE, Command.WORK_FAIL)
                    try:
                        document = json.loads(data)
                    except ValueError:
                        assert answer.command is Command.WORK_FAIL
                        continue
                    if not isinstance(document, dict) or not isinstance(document.get("args"), list):
                        assert answer.command is Command.WORK_FAIL
                seen["jobs"] += len(batch)

            check()
            assert seen["jobs"] >= 1000
            assert pool.children() == [child]
            assert _rss_kb(child) - rss_before < 8 * 1024
        finally:
            client.close()

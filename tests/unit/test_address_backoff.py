from __future__ import annotations

import pytest

from islandora_job.address import ServerAddress, host_problem, parse_servers, servers_from_environment
from islandora_job.backoff import Backoff, Throttle
from islandora_job.errors import ConfigError


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("gearman.example", "gearman.example", 4730),
        ("10.0.0.1:4731", "10.0.0.1", 4731),
        ("[::1]:4732", "::1", 4732),
        ("[::1]", "::1", 4730),
        ("::1", "::1", 4730),
        (" host:1 ", "host", 1),
    ],
)
def test_parse(text: str, host: str, port: int) -> None:
    address = ServerAddress.parse(text)
    assert (address.host, address.port) == (host, port)
    assert ServerAddress.parse(str(address)) == address


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:65536", "host:x", ":4730", "[::1", "[::1]x"])
def test_bad_addresses_name_themselves(text: str) -> None:
    with pytest.raises(ConfigError):
        ServerAddress.parse(text)


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("h" * 64, "empty label or one longer than 63"),  # the idna codec's UnicodeError at connect
        ("a..b", "empty label"),
        (".a", "empty label"),
        ("a\x00b", "control character"),  # ValueError at connect
        ("a b", "space"),
        ("127.0.0.1:1:2", "neither an IPv6 address nor a host name"),  # was taken as an IPv6 host
        ("http://x", "neither an IPv6 address nor a host name"),
        ("a/b", "not a host name"),
        (".".join(["x" * 63] * 4) + ".com", "longer than 253"),
    ],
)
def test_a_host_that_cannot_be_one_is_named_with_the_reason(host: str, problem: str) -> None:
    assert problem in (host_problem(host) or "")
    with pytest.raises(ConfigError, match="host .*" + problem.split()[0]):
        ServerAddress.parse(f"[{host}]:4730" if ":" in host else f"{host}:4730")
    assert ServerAddress.parse(f"[{host}]:4730" if ":" in host else host, check_host=False).host == host


@pytest.mark.parametrize(
    "host", ["gearman.example", "gearman.example.", "gearman_1", "h" * 63, "b\u00fccher.example", "::1", "fe80::1%eth0"]
)
def test_hosts_that_may_be_ones_pass(host: str) -> None:
    assert host_problem(host) is None


def test_lists_dedupe_and_keep_order() -> None:
    assert [str(a) for a in parse_servers(["b:1,a:2", "b:1"])] == ["b:1", "a:2"]


def test_precedence_flags_then_environment_then_default() -> None:
    env = {"ISLANDORA_JOB_SERVERS": "e1:1,e2:2"}
    assert [str(a) for a in servers_from_environment(["f:3"], env)] == ["f:3"]
    assert [str(a) for a in servers_from_environment([], env)] == ["e1:1", "e2:2"]
    assert [str(a) for a in servers_from_environment([], {})] == ["127.0.0.1:4730"]
    with pytest.raises(ConfigError, match="ISLANDORA_JOB_SERVERS"):
        servers_from_environment([], {"ISLANDORA_JOB_SERVERS": "x:y"})


def test_backoff_grows_to_its_cap_with_jitter_below_the_ceiling() -> None:
    backoff = Backoff(initial=0.1, cap=2.0)
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(2.0, 0.1 * 2**i) for i in range(12)]
    assert all(c / 10 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays) <= 2.0
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_backoff_without_jitter_is_exact() -> None:
    backoff = Backoff(initial=1, cap=5, jitter=False)
    assert [backoff.next_delay() for _ in range(5)] == [1, 2, 4, 5, 5]


def test_throttle_lets_one_line_through_per_window_and_counts_the_rest() -> None:
    throttle = Throttle(window=60.0)
    assert throttle.allow(0.0) == 0
    assert [throttle.allow(t) for t in (0.3, 0.6, 59.0)] == [None, None, None]
    assert throttle.allow(60.0) == 3  # the line says how many were held back
    assert throttle.allow(61.0) is None
    throttle.reset()  # a success: the next failure is logged at once
    assert throttle.allow(61.5) == 0

"""The router: payloads in, outcomes out, no I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from islandora_job import Fail, current_job
from islandora_job.worker.registry import JobSpec, Registry, discover, job
from islandora_job.worker.router import Assignment, Outcome, PlainHooks, Prepared, Router, to_bytes


def _spec(name: str, fn: Any, **options: Any) -> JobSpec:
    return job(name, **options)(fn).__islandora_job__  # type: ignore[no-any-return]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def status(self, numerator: int, denominator: int) -> None:
        self.events.append(("status", (numerator, denominator)))

    def data(self, chunk: bytes) -> None:
        self.events.append(("data", chunk))

    def warning(self, chunk: bytes) -> None:
        self.events.append(("warning", chunk))


def _context_job(*args: Any) -> str:
    context = current_job()
    context.progress(1, 3)
    context.send_data("half")
    return f"{context.name}|{context.function}|{context.handle}|{context.unique}|{context.site}|{context.uid}|{args}"


calls: dict[str, int] = {}


def _flaky(key: str, failures: int) -> int:
    calls[key] = calls.get(key, 0) + 1
    if calls[key] <= failures:
        raise ValueError(f"attempt {calls[key]}")
    return calls[key]


@pytest.fixture(scope="module")
def router() -> Router:
    registry = Registry(multisite_prefixes=["site1"])
    for spec in [
        _spec("r.add", lambda *n: sum(n)),
        _spec("r.none", lambda: None),
        _spec("r.bytes", lambda: b"\x00\xff"),
        _spec("r.text", lambda: "héllo"),
        _spec("r.dict", lambda: {"a": [1, 2]}),
        _spec("r.true", lambda: True),
        _spec("r.false", lambda: False),
        _spec("r.float", lambda: 1e20),
        _spec("r.raise", lambda: 1 / 0),
        _spec("r.fail", lambda: (_ for _ in ()).throw(Fail("nope"))),
        _spec("r.exit", lambda: exit(4)),
        _spec("r.object", lambda: object()),
        _spec("r.nan", lambda: [float("nan")]),
        _spec("r.context", _context_job, alias="r.ctx"),
        _spec("r.raw", lambda data: data[::-1], payload="raw"),
        _spec("r.flaky", _flaky, retries=2, min_backoff=0.001, max_backoff=0.002),
        _spec("r.timeout", lambda: 1, timeout=7),
    ]:
        registry.add(spec, "test")
    return Router(registry, default_timeout=30)


def _assign(function: str, data: bytes | dict[str, Any]) -> Assignment:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return Assignment(function, "H:test:1", "unique-1", raw)


def _run(router: Router, function: str, data: bytes | dict[str, Any], hooks: PlainHooks | None = None) -> Outcome:
    prepared = router.prepare(_assign(function, data))
    if isinstance(prepared, Outcome):
        return prepared
    return router.run(prepared, hooks or PlainHooks())


def _call(router: Router, func: str, *args: Any, **extra: Any) -> Outcome:
    return _run(router, func, {"func": func, "args": list(args), **extra})


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        ("r.none", b""),
        ("r.bytes", b"\x00\xff"),
        ("r.text", "héllo".encode()),
        ("r.dict", b'{"a":[1,2]}'),
        ("r.true", b"1"),
        ("r.false", b""),
        ("r.float", b"1.0E+20"),
    ],
)
def test_return_values_become_bytes(router: Router, func: str, expected: bytes) -> None:
    assert _call(router, func) == Outcome("complete", data=expected, attempts=1)


def test_args_are_positional(router: Router) -> None:
    assert _call(router, "r.add", 1, 2, 3.5).data == b"6.5"


@pytest.mark.parametrize(
    ("func", "status", "reason"),
    [
        ("r.raise", "exception", "ZeroDivisionError: division by zero"),
        ("r.fail", "fail", "nope"),
        ("r.exit", "exception", "job called sys.exit(4)"),
        ("r.object", "exception", "not JSON-serialisable"),
        ("r.nan", "exception", "not JSON-serialisable"),
    ],
)
def test_job_errors_are_outcomes(router: Router, func: str, status: str, reason: str) -> None:
    outcome = _call(router, func)
    assert outcome.status == status
    assert reason in outcome.reason
    assert outcome.attempts == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1]", "must be a JSON object"),
        (b'{"args": []}', "no 'func'"),
        (b'{"func": "r.add"}', "no 'args'"),
        (b'{"func": "r.add", "args": {}}', "'args' must be a list"),
        (b'{"func": "r.add", "args": [], "uid": 1.5}', "'uid'"),
        (b"[" * 100000, "nested too deeply"),
    ],
)
def test_bad_payloads_fail_with_a_reason(router: Router, data: bytes, reason: str) -> None:
    outcome = _run(router, "r.add", data)
    assert outcome.status == "exception" and outcome.attempts == 0
    assert outcome.reason.startswith("bad payload") and reason in outcome.reason


def test_an_unknown_func_is_a_failure_not_a_silent_success(router: Router) -> None:
    outcome = _call(router, "r.nobody")
    assert outcome == Outcome("exception", reason="unknown job 'r.nobody'")


def test_name_alias_and_multisite_prefix_resolve(router: Router) -> None:
    recorder = Recorder()
    payload = {"func": "r.context", "args": ["x"], "site": "site1", "uid": 5}
    outcome = _run(router, "site1_r.ctx", payload, PlainHooks(recorder))
    assert outcome.data == b"r.context|site1_r.ctx|H:test:1|unique-1|site1|5|('x',)"
    assert recorder.events == [("status", (1, 3)), ("data", b"half")]
    for func in ("r.ctx", "site1_r.ctx"):
        assert _run(router, "r.ctx", {**payload, "func": func}).ok


def test_raw_jobs_get_the_bytes(router: Router) -> None:
    assert _run(router, "r.raw", b"not json at all").data == b"lla ta nosj ton"


def test_timeouts_default_or_declared(router: Router) -> None:
    prepared = router.prepare(_assign("r.timeout", {"func": "r.timeout", "args": []}))
    assert isinstance(prepared, Prepared) and prepared.timeout == 7
    prepared = router.prepare(_assign("r.add", {"func": "r.add", "args": []}))
    assert isinstance(prepared, Prepared) and prepared.timeout == 30


def test_retries_rearm_the_limit_and_back_off(router: Router) -> None:
    slept: list[float] = []
    hooks = PlainHooks(sleep=slept.append)
    outcome = _call(router, "r.flaky", "a", 2)  # fails twice, succeeds on the third attempt
    assert outcome == Outcome("complete", data=b"3", attempts=3)
    outcome = _run(router, "r.flaky", {"func": "r.flaky", "args": ["b", 5]}, hooks)
    assert outcome.status == "exception" and outcome.attempts == 3
    assert outcome.reason == "ValueError: attempt 3"
    assert hooks.armed == [30, 30, 30]
    assert len(slept) == 2 and all(0 < s <= 0.002 for s in slept)


def test_to_bytes_refuses_what_json_cannot_say() -> None:
    with pytest.raises(ValueError):
        to_bytes({"x": float("inf")})  # a bare inf is PHP's INF (tests/integration/test_php_echo.py), not JSON


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"func": st.sampled_from(["r.add", "r.text", "r.raise", "r.nobody", ""]) | st.text(max_size=8)},
            optional={"args": json_values, "site": json_values, "uid": json_values},
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_fuzz_every_payload_gets_exactly_one_outcome(router: Router, data: bytes) -> None:
    outcome = _run(router, "r.text", data)
    assert outcome.status in ("complete", "exception", "fail")
    if outcome.status != "complete":
        assert outcome.reason


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("function", "func"),
    [
        ("r.add", "r.dict"),  # issue 10: a payload picked another job than its Gearman function's
        ("r.ctx", "r.add"),
        ("site1_r.ctx", "r.add"),
        ("r.raw", "r.add"),  # a raw job's function never decodes a payload: it gets the bytes
    ],
)
def test_a_payload_func_cannot_pick_another_job(router: Router, function: str, func: str) -> None:
    outcome = _run(router, function, {"func": func, "args": [1, 2]})
    if function == "r.raw":
        assert outcome.ok  # reversed bytes of the payload, not add's 3
        assert outcome.data != b"3"
        return
    assert outcome.status == "exception" and outcome.attempts == 0
    assert repr(func) in outcome.reason and repr(function) in outcome.reason


@pytest.mark.parametrize(
    "function", ["r.context", "r.ctx", "site1_r.context", "site1_r.ctx"]
)  # its name, its alias, and their prefixed names
def test_func_is_accepted_on_the_jobs_own_functions(router: Router, function: str) -> None:
    assert _run(router, function, {"func": "r.context", "args": []}).ok


@pytest.mark.parametrize("site", ["site2", "site2_r", "http://evil"])
def test_a_payload_site_does_not_make_up_a_multisite_prefix(router: Router, site: str) -> None:
    outcome = _run(router, f"{site}_r.ctx", {"func": "r.context", "args": [], "site": site})
    assert outcome.status == "exception" and "does not serve" in outcome.reason


class _Command:
    """An external job that shows what it was given."""

    name = "ijh"
    timeout = 5.0

    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def run(self, assignment: Assignment, payload: Any) -> Outcome:
        self.seen.append(None if payload is None else payload.func)
        return Outcome("complete", data=b"1", attempts=1)


def test_a_command_job_gets_func_unchanged() -> None:
    # the drush router resolves aliases itself: function ijh carries func islandora_job_heartbeat (the original's
    # cron heartbeat), and anything else is the router's business
    command = _Command()
    router = Router(Registry(), external={"ijh": command})
    for func in ("islandora_job_heartbeat", "something_else"):
        assert _run(router, "ijh", {"func": func, "args": ["ping", 1]}).ok
    assert command.seen == ["islandora_job_heartbeat", "something_else"]


def test_a_command_job_that_raises_is_a_failure() -> None:
    class Broken(_Command):
        def run(self, assignment: Assignment, payload: Any) -> Outcome:
            raise RuntimeError("bug")

    outcome = _run(Router(Registry(), external={"ijh": Broken()}), "ijh", b"{}")
    assert outcome.status == "exception" and "RuntimeError: bug" in outcome.reason


def test_a_deeply_nested_return_value_is_a_job_failure() -> None:
    # issue 10: RecursionError escaped to_bytes and killed the worker process, three times, with no dead letter
    registry = Registry()
    registry.add(_spec("r.deep", lambda depth: _deep(depth)), "test")
    registry.add(_spec("r.deep2", lambda: _deep(100_000), retries=1, min_backoff=0.001, max_backoff=0.001), "t")
    router = Router(registry)
    outcome = _call(router, "r.deep", 5000)
    reason = "job returned a value nested too deeply to encode as JSON"
    assert outcome == Outcome("exception", reason=reason, attempts=1)
    assert _call(router, "r.deep", 50).ok  # shallow enough is fine
    assert _call(router, "r.deep2").attempts == 2  # retried like any failure


def test_a_value_whose_encoding_raises_is_a_job_failure() -> None:
    class Weird(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise KeyError("boom")

    registry = Registry()
    registry.add(_spec("r.weird", lambda: {"x": Weird(a=1)}), "test")
    outcome = _call(Router(registry), "r.weird")
    assert outcome.status == "exception" and outcome.attempts == 1


def _args_back(*args: Any) -> str:
    context = current_job()
    return json.dumps([repr(a) if isinstance(a, bytes) else a for a in args] + [context.site])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", [repr(b""), None]),
        (b"hello from gearman -f", [repr(b"hello from gearman -f"), None]),
        (b"\x00\xff\x80", [repr(b"\x00\xff\x80"), None]),
        (b'{"func": "r.any", "args": ["ping", 5], "site": "http://s"}', ["ping", 5, "http://s"]),
        (b'{"func": "r.any", "args": [1]}\x00', [1, None]),
        (b'{"func": "r.add", "args": [1, 2]}', [repr(b'{"func": "r.add", "args": [1, 2]}'), None]),
        (b'{"func": "r.any"}', [repr(b'{"func": "r.any"}'), None]),
    ],
)
def test_a_job_of_payload_any_answers_whatever_it_is_sent(data: bytes, expected: list[Any]) -> None:
    """Its own islandora_job payload gives it the args (and site, uid), anything else the bytes: never a failure."""
    registry = Registry()
    registry.add(_spec("r.any", _args_back, payload="any"), "test")
    registry.add(_spec("r.add", lambda *n: sum(n)), "test")
    outcome = _run(Router(registry), "r.any", data)
    assert outcome.ok and json.loads(outcome.data) == expected


@pytest.mark.parametrize("data", [b"", b"plain text", b"\xff\x00", b"{", b'{"func": "x", "args": []}'])
def test_the_builtin_ping_and_heartbeat_answer_any_payload(data: bytes) -> None:
    registry = discover(["islandora_job.worker.builtin_jobs"], use_entry_points=False)
    router = Router(registry)
    assert _run(router, "islandora_job.ping", data) == Outcome("complete", data=b"pong", attempts=1)
    assert _run(router, "ijh", data) == Outcome("complete", data=b"1", attempts=1)


def test_the_heartbeat_goes_through_the_normal_job_path_with_its_payload() -> None:
    """The module's submission: function ijh, func islandora_job_heartbeat, args ["ping", time()]."""
    registry = discover(["islandora_job.worker.builtin_jobs"], use_entry_points=False)
    data = b'{"func":"islandora_job_heartbeat","args":["ping",1764750000],"site":"http:\\/\\/localhost","uid":"1"}'
    prepared = Router(registry).prepare(Assignment("ijh", "H:x:1", "u", data))
    assert isinstance(prepared, Prepared) and prepared.spec is registry.get("islandora_job_heartbeat")
    assert prepared.payload is not None and prepared.payload.args == ("ping", 1764750000)
    assert prepared.payload.site == "http://localhost" and prepared.payload.uid == "1"
    assert Router(registry).run(prepared, PlainHooks()) == Outcome("complete", data=b"1", attempts=1)


def _raises_value_error() -> None:
    raise ValueError("no")


def _fails() -> None:
    raise Fail("plainly")


@pytest.mark.parametrize(
    ("fn", "status"), [(lambda: current_job().name, "complete"), (_raises_value_error, "exception"), (_fails, "fail")]
)
def test_the_job_context_is_current_during_the_call_only(fn: Any, status: str) -> None:
    """The router sets the context for the call and resets it however the job ends: nothing leaks into the loop,
    or into the next job."""
    registry = Registry()
    registry.add(_spec("r.scoped", fn), "test")
    outcome = _call(Router(registry), "r.scoped")
    assert (outcome.status, outcome.ok) == (status, status == "complete")
    if outcome.ok:
        assert outcome.data == b"r.scoped"
    with pytest.raises(RuntimeError, match="outside a running job"):
        current_job()

"""The islandora_job payload and function names, as the Drupal module's PHP writes and reads them."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from islandora_job.payload import (
    Payload,
    PayloadError,
    check_unique,
    decode,
    dedupe_key,
    function_name,
    parse_cli_argument,
    parse_json,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


def test_encoding_is_the_php_module_s_json() -> None:
    data = Payload("islandora_derivatives", ("islandora:1", 2), "http://localhost", 1).encode()
    assert data == b'{"func":"islandora_derivatives","args":["islandora:1",2],"site":"http://localhost","uid":1}'


def test_php_json_encode_reads_the_same_document() -> None:
    """PHP, the peer that decodes our payloads in bridge jobs, sees the same values."""
    php = shutil.which("php")
    assert php, "php-cli is required (make system-deps installs it)"
    data = Payload("f", ("ü", [1, {"a": None}]), "http://x", 3).encode()
    script = "echo json_encode(json_decode(stream_get_contents(STDIN), true));"
    out = subprocess.run([php, "-r", script], input=data, capture_output=True, check=True).stdout
    assert json.loads(out) == json.loads(data)


@settings(max_examples=300)
@given(st.text(min_size=1, max_size=30), st.lists(json_values, max_size=5), st.none() | st.text(max_size=20))
def test_round_trip(func: str, args: list[object], site: str | None) -> None:
    payload = Payload(func, tuple(args), site, 7)
    assert decode(payload.encode()) == payload


@pytest.mark.parametrize(
    "data, message",
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"args": []}', "no 'func'"),
        (b'{"func": "", "args": []}', "no 'func'"),
        (b'{"func": 3, "args": []}', "no 'func'"),
        (b'{"func": "f"}', "no 'args'"),
        (b'{"func": "f", "args": {"a": 1}}', "'args' must be a list"),
        (b'{"func": "f", "args": [], "site": 3}', "'site' must be a string"),
        (b'{"func": "f", "args": [], "uid": true}', "'uid' must be"),
        (b"[" * 100000, "nested too deeply|not JSON"),
    ],
)
def test_bad_payloads_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode(data)


def test_one_trailing_nul_is_tolerated_as_a_node_client_sends_it() -> None:
    document = b'{"func": "f", "args": [1], "site": null, "uid": null}'
    assert decode(document + b"\0") == decode(document) == Payload("f", (1,))
    with pytest.raises(PayloadError, match="not JSON"):
        decode(document + b"\0\0")  # one, as a C string ends; more is not a payload
    with pytest.raises(PayloadError, match="not JSON"):
        decode(b"\0")


def test_unserialisable_arguments_are_refused_before_sending() -> None:
    with pytest.raises(PayloadError, match="not JSON-serialisable"):
        Payload("f", (object(),)).encode()
    with pytest.raises(PayloadError, match="not JSON-serialisable"):
        Payload("f", (float("nan"),)).encode()


@pytest.mark.parametrize(
    "name, alias, multisite, expected",
    [
        ("job", None, None, "job"),
        ("job", "fast_job", None, "fast_job"),
        ("job", None, "default", "job"),
        ("job", None, "site2", "site2_job"),
        ("job", "alias", "site2", "site2_alias"),
    ],
)
def test_function_names(name: str, alias: str | None, multisite: str | None, expected: str) -> None:
    assert function_name(name, alias, multisite) == expected


def test_function_name_refuses_empty_and_nul() -> None:
    with pytest.raises(PayloadError):
        function_name("")
    with pytest.raises(PayloadError, match="NUL"):
        function_name("a\0b")


def test_dedupe_key_is_short_stable_and_specific() -> None:
    key = dedupe_key("f", b"payload")
    assert len(key) == 43
    assert key == dedupe_key("f", b"payload")
    assert key != dedupe_key("g", b"payload")
    assert key != dedupe_key("f", b"payload2")
    assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_unique_key_limit_is_gearmand_s() -> None:
    assert check_unique("u" * 63) == "u" * 63
    # gearmand takes 64 bytes, but a persistent queue gives 63 back after a restart.
    with pytest.raises(PayloadError, match="at most 63"):
        check_unique("u" * 64)
    with pytest.raises(PayloadError, match="NUL"):
        check_unique("a\0")


@pytest.mark.parametrize(
    "text, value",
    [("42", 42), ("a b", "a b"), ('{"a": 1}', {"a": 1}), ("[1]", [1]), ("null", None), ("islandora:1", "islandora:1")],
)
def test_cli_arguments_are_json_when_valid(text: str, value: object) -> None:
    assert parse_cli_argument(text) == value


@pytest.mark.parametrize("text", ['{"dsid":', "[1,", " \t{x}", "[", "{'a': 1}"])
def test_a_cli_argument_that_starts_like_json_must_be_json(text: str) -> None:
    with pytest.raises(PayloadError, match="looks like JSON but is not valid JSON"):
        parse_cli_argument(text)
    assert parse_cli_argument("a{b") == "a{b" and parse_cli_argument("}") == "}"  # only a leading { or [


_ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


def _outcome(parse: Callable[[bytes], object], data: bytes) -> object:
    try:
        return ("value", parse(data))
    except (UnicodeDecodeError, ValueError) as exc:
        return ("error", type(exc))


@settings(max_examples=500)
@given(
    st.one_of(
        st.binary(max_size=40),
        st.binary(max_size=40).map(lambda tail: b"{" + tail),
        st.tuples(st.dictionaries(st.text(max_size=6), json_values, max_size=3), st.sampled_from(_ENCODINGS)).map(
            lambda pair: json.dumps(pair[0], ensure_ascii=False).encode(pair[1])
        ),
        st.text(max_size=20).map(lambda text: ("{" + text).encode("utf-8", "surrogatepass")),
    )
)
def test_parsing_is_json_loads_value_for_value_and_error_for_error(data: bytes) -> None:
    """The worker's short cut for UTF-8 objects (parse_json) reads exactly what json.loads reads: the same value,
    or the same kind of error, for any bytes, every encoding json.loads detects, and a BOM."""
    assert _outcome(parse_json, data) == _outcome(json.loads, data)

"""The islandora_job payload and Gearman function names, as the Drupal module defined them.

A PHP site using the original module sends ``{"func": NAME, "args": [...], "site": BASE_URL, "uid": UID}`` to a
Gearman function named after the job (its alias when it has one), prefixed with ``"{site}_"`` on a multisite
install. Both sides of this project, the client and the router, use this module so they cannot drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from islandora_job.errors import IslandoraJobError

#: The longest unique key that survives gearmand's persistent queues. gearmand takes 64 bytes over the wire
#: (GEARMAN_MAX_UNIQUE_SIZE), but its queue plugins keep 63 and a NUL: a 64-byte key comes back from a restart cut
#: short, colliding with its neighbours (sqlite and memcached, measured with gearmand 1.1.20).
GEARMAN_MAX_UNIQUE = 63
#: What the original module sends when no site is known; it also means "no multisite prefix".
DEFAULT_SITE = "default"
#: json.loads' own decoder, with its defaults.
_DECODER = json.JSONDecoder()


class PayloadError(IslandoraJobError, ValueError):
    """A payload is not a valid islandora_job payload; the message says which part.

    Also a :class:`ValueError` (a bad value given by the caller), as it was before the package had a hierarchy.
    """


@dataclass(frozen=True, slots=True)
class Payload:
    func: str
    args: tuple[Any, ...] = ()
    site: str | None = None
    uid: int | str | None = None

    def encode(self) -> bytes:
        """Compact JSON, key order as the PHP module writes it (``json_encode`` of func, args, site, uid)."""
        document = {"func": self.func, "args": list(self.args), "site": self.site, "uid": self.uid}
        try:
            text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"job {self.func!r}: arguments are not JSON-serialisable: {exc}") from exc
        return text.encode("utf-8")


def decode(data: bytes) -> Payload:
    """Parse a payload received by a worker; every way it can be wrong raises :class:`PayloadError`.

    One trailing NUL is tolerated: a Node.js client appends ``\\0`` to the JSON, as C strings end.
    """
    if data.endswith(b"\0"):
        data = data[:-1]
    try:
        document = parse_json(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"payload is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError("payload is nested too deeply") from exc
    if not isinstance(document, dict):
        raise PayloadError(f"payload must be a JSON object, not {type(document).__name__}")
    func = document.get("func")
    if not isinstance(func, str) or not func:
        raise PayloadError("payload has no 'func' string")
    if "args" not in document:
        raise PayloadError("payload has no 'args'")
    args = document["args"]
    if not isinstance(args, list):
        raise PayloadError(f"payload 'args' must be a list, not {type(args).__name__}")
    site = document.get("site")
    if site is not None and not isinstance(site, str):
        raise PayloadError("payload 'site' must be a string")
    uid = document.get("uid")
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int | str)):
        raise PayloadError("payload 'uid' must be an integer or a string")
    return Payload(func=func, args=tuple(args), site=site, uid=uid)


def parse_json(data: bytes) -> Any:
    """``json.loads(data)``, the same value or the same error, with the usual case parsed without its wrappers.

    A payload is a JSON object in UTF-8. When the bytes start as one (``{``, no BOM, no NUL in the first two bytes:
    what ``json.loads`` would itself detect as UTF-8), the text goes straight to its decoder: ``json.loads`` on
    bytes costs two more Python calls (its encoding detection), on the path of every job. Anything else (a BOM,
    UTF-16 or -32, not an object) goes through ``json.loads``. ``tests/unit/test_payload.py`` compares the two.
    """
    if data[:1] == b"{" and data[1:2] != b"\0":
        return _DECODER.decode(data.decode("utf-8", "surrogatepass"))
    return json.loads(data)


def function_name(name: str, alias: str | None = None, multisite: str | None = None) -> str:
    """The Gearman function a job is submitted to and served on.

    ``multisite`` is the site's prefix on a multisite install (the original's ``islandora_job_multisite_prefix``);
    ``None`` or ``"default"`` means no prefix.
    """
    base = alias or name
    if not base:
        raise PayloadError("job name is empty")
    if "\0" in base:
        raise PayloadError(f"job name {base!r} contains a NUL byte")
    if multisite and multisite != DEFAULT_SITE:
        return f"{multisite}_{base}"
    return base


def dedupe_key(function: str, payload: bytes) -> str:
    """A unique key derived from the function and payload: 43 characters of base64url SHA-256.

    gearmand coalesces jobs with the same function and unique key while the first is queued or running, which is
    what the original module did with a database table of WAITING rows.
    """
    digest = hashlib.sha256(function.encode("utf-8") + b"\0" + payload).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_unique(unique: str) -> str:
    size = len(unique.encode("utf-8"))
    if size > GEARMAN_MAX_UNIQUE:
        raise PayloadError(f"unique key is {size} bytes; gearmand's queues keep at most {GEARMAN_MAX_UNIQUE}")
    if "\0" in unique:
        raise PayloadError("unique key contains a NUL byte")
    return unique


def parse_cli_argument(text: str) -> Any:
    """CLI job arguments: JSON when the text is valid JSON, else the text itself (``42`` → 42, ``a b`` → "a b").

    Text that starts (after blanks) with ``{`` or ``[`` was meant as JSON: when it does not parse, that is a
    :class:`PayloadError` naming where, never a string sent silently in place of the object (``'{"dsid":'``).
    """
    try:
        return json.loads(text)
    except ValueError as exc:
        if text.lstrip()[:1] in ("{", "["):
            raise PayloadError(f"looks like JSON but is not valid JSON ({exc}); --string sends it as text") from exc
        return text

"""Frames between the worker and the persistent PHP runner: no I/O here, bytes in and out.

The runner reads requests on its file descriptor 3 and writes replies on its file descriptor 4; its stdout and
stderr are the worker's log. A job cannot reach fds 3/4 by printing (``echo``, warnings and fatal errors go to an
output buffer or stderr), so nothing a job does corrupts the conversation. Each message is one frame::

    u32 header length | u32 data length | header (JSON object, UTF-8) | data (raw bytes)

(both lengths big-endian). The data carries what must stay binary: the payload of a job, the output of a job.

Requests (worker → runner): ``{"type": "job", "function", "handle", "uid", "max_output"}`` + the raw payload.
Replies (runner → worker): once, after the bootstrap, ``{"type": "ready", "pid", "mode", "php"}`` or
``{"type": "error", "reason"}`` (then the runner exits); after each job ``{"type": "result", "status": "complete" |
"exception", "reason", "truncated"}`` + the job's output, with ``"runner_ending": true`` when the job called
``exit()`` or hit a fatal error (the runner exits after that frame). Closing fd 3 asks the runner to exit.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Final

from islandora_job.errors import ProtocolError

_LENGTHS: Final = struct.Struct(">II")
MAX_HEADER: Final = 1024 * 1024
#: Larger than any result the worker keeps (``max_output_bytes``): a longer frame is a broken runner.
MAX_DATA: Final = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    header: dict[str, Any]
    data: bytes = b""

    @property
    def type(self) -> str:
        return str(self.header.get("type", ""))


def encode(header: dict[str, Any], data: bytes = b"") -> bytes:
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _LENGTHS.pack(len(text), len(data)) + text + data


class FrameReader:
    """Frames out of a byte stream fed in arbitrary pieces; a frame that cannot be one raises ProtocolError."""

    def __init__(self, max_data: int = MAX_DATA) -> None:
        self._buffer = bytearray()
        self._max_data = max_data

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames = []
        while len(self._buffer) >= _LENGTHS.size:
            header_length, data_length = _LENGTHS.unpack_from(self._buffer)
            if header_length > MAX_HEADER or data_length > self._max_data:
                raise ProtocolError(f"runner sent a frame of {header_length}+{data_length} bytes, over the limit")
            end = _LENGTHS.size + header_length + data_length
            if len(self._buffer) < end:
                break
            raw = bytes(self._buffer[_LENGTHS.size : _LENGTHS.size + header_length])
            data = bytes(self._buffer[_LENGTHS.size + header_length : end])
            del self._buffer[:end]
            try:
                header = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as exc:
                raise ProtocolError(f"runner sent a frame header that is not JSON: {exc}") from exc
            if not isinstance(header, dict):
                raise ProtocolError("runner sent a frame header that is not a JSON object")
            frames.append(Frame(header, data))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buffer)

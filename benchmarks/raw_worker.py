"""The reference: a minimal Gearman worker on a raw socket, no library, echoing each job's payload.

One GRAB_JOB per job, PRE_SLEEP when idle, TCP_NODELAY. Run: ``python raw_worker.py HOST:PORT FUNCTION [--into]``.
It exits when the server goes away.

Without ``--into`` it reads with ``recv(256 KiB)``, as the project's own worker did until 2026-12-03: the loop every
dispatch ratio since 2026-11-27 (and the goals in ``goals.toml``) is measured against. Each such ``recv`` allocates
256 KiB, above glibc's mmap threshold, so it also costs an ``mmap``, an ``mremap`` and a ``munmap``; on the virtual
machine of 2026-12-03 that doubled the loop's CPU per job. ``--into`` reads into one buffer allocated once (as the
worker now does): the fastest loop here, the true ceiling, shown in its own row.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys

HEADER = struct.Struct("!4sII")
REQ, RES = b"\0REQ", b"\0RES"
CAN_DO, PRE_SLEEP, NOOP, GRAB_JOB, NO_JOB, JOB_ASSIGN, WORK_COMPLETE = 1, 4, 6, 9, 10, 11, 13


def packet(command: int, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return HEADER.pack(REQ, command, len(body)) + body


def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    function = sys.argv[2].encode()
    into = sys.argv[3:] == ["--into"]
    inbox = memoryview(bytearray(262144))
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(packet(CAN_DO, function) + packet(GRAB_JOB))
    grab, sleep = packet(GRAB_JOB), packet(PRE_SLEEP)
    buffer = bytearray()  # appending and deleting from the front are amortised O(1): large payloads stay linear
    while True:
        chunk = inbox[: sock.recv_into(inbox)] if into else sock.recv(262144)
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= 12:
            _, command, length = HEADER.unpack_from(buffer)
            if len(buffer) < 12 + length:
                break
            body = bytes(buffer[12 : 12 + length])
            del buffer[: 12 + length]
            if command == JOB_ASSIGN:
                handle, _, data = body.split(b"\0", 2)
                sock.sendall(packet(WORK_COMPLETE, handle, data) + grab)
            elif command == NO_JOB:
                sock.sendall(sleep)
            elif command == NOOP:
                sock.sendall(grab)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, ConnectionError):
        main()

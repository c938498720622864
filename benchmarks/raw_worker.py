"""The ceiling: a minimal Gearman worker on a raw socket, no library, echoing each job's payload.

It is what any Python worker on this machine can at best approach: one GRAB_JOB per job, PRE_SLEEP when idle,
TCP_NODELAY. Run: ``python raw_worker.py HOST:PORT FUNCTION``. It exits when the server goes away.
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
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(packet(CAN_DO, function) + packet(GRAB_JOB))
    grab, sleep = packet(GRAB_JOB), packet(PRE_SLEEP)
    buffer = bytearray()  # appending and deleting from the front are amortised O(1): large payloads stay linear
    while True:
        chunk = sock.recv(262144)
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

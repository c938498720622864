"""A deliberately plain Gearman client for tests: one connection, blocking, no cleverness to hide bugs behind."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from islandora_job.address import ServerAddress
from islandora_job.codec import Command
from islandora_job.connection import Connection

DONE = (Command.WORK_COMPLETE, Command.WORK_FAIL, Command.WORK_EXCEPTION)


def payload(func: str, *args: Any, site: str | None = None, uid: int | str | None = None) -> bytes:
    return json.dumps({"func": func, "args": list(args), "site": site, "uid": uid}).encode()


@dataclass
class Answer:
    command: Command
    data: bytes
    handle: bytes
    progress: list[tuple[bytes, bytes]]
    partial: list[bytes]

    @property
    def ok(self) -> bool:
        return self.command is Command.WORK_COMPLETE


class PlainClient:
    def __init__(self, address: str, *, exceptions: bool = True, timeout: float = 30.0) -> None:
        self.conn = Connection(ServerAddress.parse(address), io_timeout=timeout)
        self.conn.connect()
        self.pending: list[Any] = []
        if exceptions:
            self.conn.send_packet(Command.OPTION_REQ, "exceptions")
            assert self._next().command is Command.OPTION_RES

    def _next(self) -> Any:
        while not self.pending:
            self.pending.extend(self.conn.receive())
        return self.pending.pop(0)

    def submit_many(self, function: str, payloads: list[bytes]) -> list[Answer]:
        """Pipelined foreground jobs; answers in submission order."""
        for data in payloads:
            self.conn.send_packet(Command.SUBMIT_JOB, function, "", data)
        handles: list[bytes] = []
        answers: dict[bytes, Answer] = {}
        progress: dict[bytes, list[tuple[bytes, bytes]]] = {}
        partial: dict[bytes, list[bytes]] = {}
        while len(answers) < len(payloads):
            packet = self._next()
            if packet.command is Command.JOB_CREATED:
                handles.append(packet["job_handle"])
                continue
            handle = packet["job_handle"].rstrip(b"\0")  # gearmand 1.1.20 sends WORK_FAIL's handle with a NUL
            if packet.command is Command.WORK_STATUS:
                progress.setdefault(handle, []).append((packet["numerator"], packet["denominator"]))
            elif packet.command is Command.WORK_DATA:
                partial.setdefault(handle, []).append(packet["data"])
            elif packet.command in DONE:
                data = packet.args.get("data", b"")
                answers[handle] = Answer(
                    packet.command, data, handle, progress.get(handle, []), partial.get(handle, [])
                )
        return [answers[h] for h in handles]

    def submit(self, function: str, data: bytes) -> Answer:
        return self.submit_many(function, [data])[0]

    def call(self, func: str, *args: Any, **kwargs: Any) -> Answer:
        return self.submit(func, payload(func, *args, **kwargs))

    def background(self, function: str, data: bytes) -> bytes:
        self.conn.send_packet(Command.SUBMIT_JOB_BG, function, "", data)
        packet = self._next()
        assert packet.command is Command.JOB_CREATED, packet
        return bytes(packet["job_handle"])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PlainClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02, message: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)

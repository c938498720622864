"""One server as the worker's I/O loop sees it: a non-blocking socket, its protocol state, timers, backoff.

The loop in :mod:`islandora_job.worker.process` owns every link and waits on all of them in one selector; nothing here
blocks, except :meth:`ServerLink.send_blocking`, which the job's own progress reports and the watchdog use while
the loop is busy running that job. A link is DOWN (no socket: ``sock is None``, reconnect at ``retry_at``),
CONNECTING (a non-blocking connect in progress) or open, where :class:`~islandora_job.worker.protocol.WorkerProtocol`
keeps the Gearman state. ``due`` is the one deadline the loop watches: the connect's, or that of an answer the
server owes us (to the liveness probe or to a grab).

The sockets are tuned as the project's client connections are (:mod:`islandora_job.connection`): ``TCP_NODELAY``
and short keepalive timers; those constants are imported from there, so they are stated once.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from typing import Final

from islandora_job.address import ServerAddress, host_problem
from islandora_job.backoff import Backoff, Throttle
from islandora_job.codec import DEFAULT_MAX_PACKET
from islandora_job.connection import ReadBuffer, describe_os_error, tune_socket
from islandora_job.errors import ConnectionLost
from islandora_job.worker.protocol import WorkerProtocol

#: Bytes read from one server per wake-up of the loop: the bound on the work one connection can cause at a time.
RECV_SIZE: Final = 256 * 1024
#: How often a server that keeps failing is logged (one line per window, with the count held back).
FAILURE_LOG_WINDOW: Final = 60.0
NEVER: Final = float("inf")


class ServerLink:
    def __init__(
        self,
        address: ServerAddress,
        registration: bytes,
        *,
        max_packet: int = DEFAULT_MAX_PACKET,
        backoff_cap: float = 10.0,
    ) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.connecting = False
        self.proto = WorkerProtocol(registration, max_packet=max_packet)
        self._registration = registration
        self._max_packet = max_packet
        self._inbox = ReadBuffer(RECV_SIZE)
        self.outbuf = bytearray()  # bytes on their way: the loop waits for the socket to take them
        self.results = b""  # a job's answer, sent with the next packet on this link (one write per job)
        self.due = NEVER
        self.asked_at = 0.0  # when the answer now awaited (to the probe or a grab) was asked for
        self.retry_at = 0.0
        self.backoff = Backoff(initial=min(0.2, backoff_cap), cap=backoff_cap)
        self.failures = 0  # attempts since the last successful exchange
        self.throttle = Throttle(FAILURE_LOG_WINDOW)
        self.mask = 0  # the events registered with the loop's selector

    def __repr__(self) -> str:
        state = "down" if self.sock is None else "connecting" if self.connecting else self.proto.phase.value
        return f"<ServerLink {self.address} {state}>"

    @property
    def unsent(self) -> int:
        return len(self.outbuf) + len(self.results)

    @property
    def is_open(self) -> bool:
        return self.sock is not None and not self.connecting

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def wanted_mask(self, read: int, write: int) -> int:
        if self.sock is None:
            return 0
        if self.connecting:
            return write
        return read | write if self.outbuf else read

    # --- connecting ---------------------------------------------------------------------------------------------

    def start_connect(self, now: float, timeout: float) -> None:
        """Begin a non-blocking connect; raises OSError (with a short reason in ``strerror``) when it fails at once.

        Name resolution is the one blocking step: configure servers by address, or resolve through /etc/hosts.
        A name that cannot be a host (a label over 63 characters, an empty one, a NUL) makes the resolver raise
        ``UnicodeError`` or ``ValueError``; it is raised as an OSError here, so that it is one server down, with a
        reason, and not the death of the process and of every other server's service with it.
        """
        problem = host_problem(self.address.host)
        if problem:
            raise OSError(errno.EINVAL, f"host {problem}")
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                self.address.host, self.address.port, type=socket.SOCK_STREAM
            )[0]
        except ValueError as exc:  # UnicodeError is one; host_problem should have said so already
            raise OSError(errno.EINVAL, f"cannot resolve host ({exc})") from exc
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        code = sock.connect_ex(sockaddr)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(code, os.strerror(code))
        self.sock = sock
        self.connecting = True
        self.due = now + timeout
        self.proto = WorkerProtocol(self._registration, max_packet=self._max_packet)
        self.outbuf.clear()
        self.results = b""

    def finish_connect(self, now: float, answer_timeout: float) -> None:
        """The socket became writable: check the outcome, tune the socket, send registration and probe."""
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        sock = self.sock
        tune_socket(sock)
        # Blocking from here on, but every send and read passes MSG_DONTWAIT, except ``receive(wait=True)``: the
        # single-server loop's one read per job, which the kernel ends after SO_RCVTIMEO, the answer deadline
        # (one system call where poll and recv took two).
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(answer_timeout))
        self.connecting = False
        self.asked_at = now
        self.due = now + answer_timeout
        self.write(self.proto.opening())

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.connecting = False
        self.due = NEVER
        self.outbuf.clear()
        self.results = b""

    # --- bytes --------------------------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` after what is pending and send what the socket takes now; the loop sends the rest."""
        if self.results:
            data, self.results = self.results + data, b""
        if self.outbuf or self.sock is None:
            self.outbuf += data
            self.flush()
            return
        try:
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ConnectionLost(str(self.address), describe_os_error(exc)) from exc
        if sent < len(data):
            self.outbuf += data[sent:]

    def flush(self) -> None:
        if not self.outbuf or self.sock is None:
            return
        try:
            sent = self.sock.send(self.outbuf, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as exc:
            raise ConnectionLost(str(self.address), describe_os_error(exc)) from exc
        del self.outbuf[:sent]

    def send_blocking(self, data: bytes, timeout: float) -> None:
        """Send what is pending and then ``data``, waiting up to ``timeout`` for the socket to take it all.

        For the job's progress packets and the watchdog, which run while the loop is busy with that job.
        """
        self.outbuf += self.results + data
        self.results = b""
        deadline = time.monotonic() + timeout
        while self.outbuf:
            if self.sock is None:
                raise ConnectionLost(str(self.address), "not connected")
            self.flush()
            if self.outbuf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectionLost(str(self.address), "timed out")
                select.select([], [self.sock], [], remaining)

    def receive(self, wait: bool = False) -> int:
        """Read once (at most :data:`RECV_SIZE` bytes) into the protocol; the number of bytes read (0: nothing
        came). With ``wait``, block until bytes come or the answer deadline set at connect time passes (a signal
        handler that returns restarts the wait; one that raises, or exits, ends it)."""
        assert self.sock is not None
        try:
            data = self._inbox.read(self.sock, 0 if wait else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise ConnectionLost(str(self.address), describe_os_error(exc)) from exc
        if not data:
            raise ConnectionLost(str(self.address), "closed by the server")
        self.proto.receive_data(data)
        return len(data)


def _timeval(seconds: float) -> bytes:
    """``seconds`` as the ``struct timeval`` of SO_RCVTIMEO (at least 1 µs: zero would mean no deadline)."""
    micros = max(1, round(seconds * 1_000_000))
    return struct.pack("@ll", micros // 1_000_000, micros % 1_000_000)

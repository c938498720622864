"""One TCP connection to one gearmand: connect, send packets, receive packets. Nothing about jobs.

Sockets are tuned the way a job system on a LAN needs them:

* ``TCP_NODELAY``: Gearman is request/response with small packets; with Nagle's algorithm and delayed ACKs a
  worker stalls ~40 ms per job (the gear library does exactly that);
* TCP keepalive with short timers, so a server that vanished without a FIN (power loss, a firewall dropping the
  flow) is noticed in about a minute and a half instead of two hours; ``dead_peer`` sets that time (keepalive
  timers and ``TCP_USER_TIMEOUT``, which also covers data sent and never acknowledged);
* a connect timeout, so an unroutable address costs seconds, not minutes;
* the I/O timeout kept by the kernel (``SO_RCVTIMEO``/``SO_SNDTIMEO``) on a blocking socket: a Python socket with
  a timeout polls before every ``send`` and ``recv``, which doubled the system calls of a worker's job.

Reading is driven by the owner: it waits with a selector on :meth:`Connection.fileno` and calls
:meth:`Connection.receive`, which does one ``recv`` and returns the whole packets it completed. Writes are
``sendall`` with a timeout; our packets are small, and the owner reads between batches of writes.
"""

from __future__ import annotations

import errno
import socket
import struct

from islandora_job.address import ServerAddress
from islandora_job.codec import DEFAULT_MAX_PACKET, Command, Packet, PacketReader, encode
from islandora_job.errors import ConnectionLost, IslandoraJobError, ProtocolError

RECV_SIZE = 256 * 1024
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3


def keepalive_timers(dead_peer: float | None) -> tuple[int, int, int]:
    """Keepalive idle time, probe interval and probe count that declare a silent peer dead after ``dead_peer``
    seconds (the kernel counts whole seconds; at least 1 s idle and between probes)."""
    if dead_peer is None:
        return KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT
    interval = max(1, round(dead_peer / (2 * KEEPALIVE_COUNT)))
    return max(1, round(dead_peer) - KEEPALIVE_COUNT * interval), interval, KEEPALIVE_COUNT


def tune_socket(sock: socket.socket, dead_peer: float | None = None) -> None:
    """The options every Gearman connection of ours gets, client or worker: no Nagle delay, and keepalive so that
    a peer whose host died is noticed (within ``dead_peer`` seconds when given, see :func:`keepalive_timers`)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        idle, interval, count = keepalive_timers(dead_peer)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        if dead_peer is not None and hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(dead_peer * 1000))


class ReadBuffer:
    """A receive buffer allocated once and read into (``recv_into``), instead of a new one per ``recv``.

    ``sock.recv(RECV_SIZE)`` allocates a bytes object of that size for every read. 256 KiB is above glibc's mmap
    threshold, so each read also cost an ``mmap``, an ``mremap`` to shrink the object to what came, a ``munmap``
    when it was freed, and a page fault: three system calls more per job than the read itself, and on a virtual
    machine they cost more than the read (docs/benchmarks.md, "one buffer per connection"). The view returned by
    :meth:`read` is valid until the next read; its owner copies what it keeps.
    """

    __slots__ = ("_view",)

    def __init__(self, size: int = RECV_SIZE) -> None:
        self._view = memoryview(bytearray(size))

    def read(self, sock: socket.socket, flags: int = 0) -> memoryview:
        """One ``recv`` of at most the buffer's size; an empty view means the peer closed the stream."""
        return self._view[: sock.recv_into(self._view, 0, flags)]


class ConnectFailed(IslandoraJobError, OSError):
    """Connecting to one server failed; ``reason`` is short enough for a one-line summary of all servers.

    Also an :class:`OSError`, as the socket error it stands for: code that handles network errors as OSError
    handles this one too.
    """

    def __init__(self, address: ServerAddress, reason: str) -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason


def describe_os_error(exc: BaseException) -> str:
    """A short reason for a socket error, for one-line summaries ("connection refused", "timed out")."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, BlockingIOError) and exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
        return "timed out"  # SO_RCVTIMEO or SO_SNDTIMEO expired
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class Connection:
    def __init__(
        self,
        address: ServerAddress,
        *,
        connect_timeout: float = 5.0,
        io_timeout: float = 30.0,
        max_packet: int = DEFAULT_MAX_PACKET,
        dead_peer: float | None = None,
    ) -> None:
        self.address = address
        self.dead_peer = dead_peer
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.max_packet = max_packet
        self._sock: socket.socket | None = None
        self._reader = PacketReader(max_packet=max_packet)
        self._inbox: ReadBuffer | None = None  # allocated at the first read

    def __repr__(self) -> str:
        state = "connected" if self._sock is not None else "closed"
        return f"<Connection {self.address} {state}>"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        """Open the connection (a no-op when open). Raises :class:`ConnectFailed`."""
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.address.host, self.address.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise ConnectFailed(self.address, describe_os_error(exc)) from exc
        tune_socket(sock, self.dead_peer)
        sock.settimeout(None)
        seconds, fraction = divmod(max(self.io_timeout, 0.001), 1.0)
        timeval = struct.pack("@ll", int(seconds), int(fraction * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self._sock = sock
        self._reader = PacketReader(max_packet=self.max_packet)

    def fileno(self) -> int:
        """The socket's descriptor, for selectors. ValueError when closed, as for a closed file."""
        if self._sock is None:
            raise ValueError(f"connection to {self.address} is closed")
        return self._sock.fileno()

    def send(self, data: bytes) -> None:
        """Send encoded packets; on failure the connection is closed and :class:`ConnectionLost` raised."""
        if self._sock is None:
            raise ConnectionLost(str(self.address), "not connected")
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ConnectionLost(str(self.address), describe_os_error(exc)) from exc

    def send_packet(self, command: Command, *args: bytes | str) -> None:
        self.send(encode(command, *args))

    def receive(self) -> list[Packet]:
        """Read once (blocking up to ``io_timeout`` if nothing is there) and return the packets completed.

        End of stream raises :class:`ConnectionLost`; malformed input closes the connection and raises
        :class:`ProtocolError`. Either way the connection is closed and may be reconnected.
        """
        if self._sock is None:
            raise ConnectionLost(str(self.address), "not connected")
        if self._inbox is None:
            self._inbox = ReadBuffer()
        try:
            data = self._inbox.read(self._sock)
        except OSError as exc:
            self.close()
            raise ConnectionLost(str(self.address), describe_os_error(exc)) from exc
        if not data:
            self.close()
            raise ConnectionLost(str(self.address), "closed by the server")
        reader = self._reader
        packets: list[Packet] = []
        try:
            reader.feed(data)
            while (packet := reader.next_packet()) is not None:
                packets.append(packet)
        except ProtocolError as exc:
            self.close()
            raise ProtocolError(f"{self.address}: {exc}") from exc
        return packets

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

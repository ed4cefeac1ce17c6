"""The lab's own fault proxy: a TCP proxy between the servers and PostgreSQL that can delay,
blackhole, reset and refuse, so `make faults` can test a slow or unreachable database, not only
a stopped one. Loopback only; threads, two per proxied connection.

    with FaultProxy.to_url(database_url) as proxy:
        server_url = proxy.url_for(database_url)   # give this to the server
        proxy.delay(2.0)      # every chunk waits 2 s, both ways
        proxy.blackhole()     # bytes vanish; connections stay open and silent
        proxy.reset()         # every open connection is reset (RST), new ones are served
        proxy.down()          # reset all, and refuse new connections (as a stopped PostgreSQL)
        proxy.heal()          # back to passing bytes through
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

PASS, DELAY, BLACKHOLE = "pass", "delay", "blackhole"


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"the fault proxy listens on loopback only, not {host}")
        self.upstream = upstream
        self.host = host
        self.port = port
        self.mode = PASS
        self.delay_seconds = 0.0
        self._lock = threading.Lock()
        self._pairs: dict[tuple[socket.socket, socket.socket], int] = {}  # pair -> pumps still running
        self._listener: socket.socket | None = None
        self._closed = False

    @classmethod
    def to_url(cls, url: str) -> FaultProxy:
        parts = urlsplit(url)
        return cls((parts.hostname or "127.0.0.1", parts.port or 5432))

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
        netloc = (f"{user}@" if user else "") + f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # --- life -----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._stop_listening()
        self.reset()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- faults ---------------------------------------------------------------------------

    def heal(self) -> None:
        self.mode, self.delay_seconds = PASS, 0.0
        if self._listener is None and not self._closed:
            self._listen()

    def delay(self, seconds: float) -> None:
        self.mode, self.delay_seconds = DELAY, seconds

    def blackhole(self) -> None:
        self.mode = BLACKHOLE

    def reset(self) -> None:
        """Reset every open connection (RST to both sides); new connections are still served."""
        with self._lock:
            pairs, self._pairs = list(self._pairs), {}
        for pair in pairs:
            for sock in pair:
                _abort(sock)

    def down(self) -> None:
        """As a stopped PostgreSQL: open connections reset, new ones refused, until heal()."""
        self._stop_listening()
        self.reset()

    @property
    def connections(self) -> int:
        return len(self._pairs)

    # --- plumbing -------------------------------------------------------------------------

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down() or close()
            try:
                server = socket.create_connection(self.upstream, timeout=5.0)
                server.settimeout(None)
            except OSError:
                _abort(client)
                continue
            pair = (client, server)
            with self._lock:
                self._pairs[pair] = 2
            for src, dst in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst, pair), name="proxy-pump", daemon=True
                ).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        """Copy src to dst. EOF is passed on as EOF; a reset or error ends the pair with resets both
        ways, as one TCP connection would (else the other side could wait forever)."""
        broken = False
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    break
                if self.mode == BLACKHOLE:
                    continue  # swallowed: the other side waits for an answer that never comes
                if self.mode == DELAY:
                    time.sleep(self.delay_seconds)
                dst.sendall(data)
        except OSError:
            broken = True
        with self._lock:
            left = 0 if broken else self._pairs.get(pair, 0) - 1
            if left > 0:
                self._pairs[pair] = left
            else:
                self._pairs.pop(pair, None)
        if broken:
            for sock in pair:
                _abort(sock)
        elif left == 0:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _abort(sock: socket.socket) -> None:
    """Close with RST rather than FIN: the peer sees 'connection reset', as after a crash. The
    shutdown first wakes a pump blocked reading this socket (close alone would not, and would
    leave the socket open while that read waits)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()

"""A quick closed-loop probe: about how many requests/s a server answers, to place capacity steps."""

from __future__ import annotations

import asyncio
import time

from lab.cpus import running_on

CONNECTIONS = 64
SECONDS = 1.5


async def _client(host: str, port: int, request: bytes, until: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < until:
            writer.write(request)
            length = -1
            status = 0
            while True:  # headers
                line = await reader.readline()
                if not line:
                    return
                if not status:
                    status = int(line.split()[1])
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length < 0:
                return  # the lab's servers always send Content-Length; anything else ends the probe
            await reader.readexactly(length)
            counts[0 if 200 <= status < 300 else 1] += 1
    finally:
        writer.close()


async def _probe(host: str, port: int, path: str, seconds: float, connections: int) -> tuple[float, int]:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    counts = [0, 0]
    began = time.monotonic()
    until = began + seconds
    results = await asyncio.gather(*(_client(host, port, request, until, counts) for _ in range(connections)),
                                   return_exceptions=True)
    elapsed = time.monotonic() - began
    errors = sum(isinstance(r, BaseException) for r in results)
    return counts[0] / elapsed if elapsed > 0 else 0.0, counts[1] + errors


def probe(host: str, port: int, path: str, *, seconds: float = SECONDS, connections: int = CONNECTIONS,
          cpus: list[int] | None = None) -> tuple[float, int]:
    """(successful requests/s, failed requests or connections) of a closed loop of `connections`
    keep-alive clients for `seconds`, run on `cpus` (the load CPUs) so that it competes with no server."""
    with running_on(cpus):
        return asyncio.run(_probe(host, port, path, seconds, connections))

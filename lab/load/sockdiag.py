"""TCP sockets by state from the kernel's sock_diag netlink interface, filtered by port in the kernel."""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Iterator, Sequence

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
              12: "SYN_RECV"}  # 12 is the kernel's NEW_SYN_RECV (a request socket); ss shows SYN-RECV too

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST_DUMP = 0x301
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_BC_JMP, _BC_S_EQ = 1, 11
_INET_DIAG_REQ_BYTECODE = 1
_ALL_STATES = 0xFFFFFFFF
LISTEN_ONLY = 1 << 10


def _port_filter(ports: Sequence[int]) -> bytes:
    """inet_diag bytecode: source port is one of ports (the kernel's OR, built as `ss` builds it)."""
    ops = b""
    for i, port in enumerate(ports):
        ops += struct.pack("=BBH", _BC_S_EQ, 8, 12) + struct.pack("=BBH", 0, 0, port)
        if i < len(ports) - 1:  # matched: jump past the remaining tests to the end (accept)
            ops += struct.pack("=BBH", _BC_JMP, 4, 12 * (len(ports) - 1 - i))
    return struct.pack("=HH", 4 + len(ops), _INET_DIAG_REQ_BYTECODE) + ops


class SockDiag:
    """TCP sockets (state, local port, inode) of one address family, dumped by the kernel."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG)
        self._sock.settimeout(2.0)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _messages(self, family: int, states: int, ports: Sequence[int]) -> Iterator[tuple[bytes, int]]:
        """(buffer, offset) of each inet_diag_msg in the kernel's answer."""
        self._seq += 1
        req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, states) + bytes(48)
        if ports:
            req += _port_filter(ports)
        self._sock.sendall(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST_DUMP,
                                       self._seq, 0) + req)
        for _ in range(100_000):  # 64 KiB per read: enough for millions of sockets
            data = self._sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    raise OSError("sock_diag: malformed netlink message")
                if seq == self._seq:  # else the tail of an earlier, abandoned dump
                    if kind == _NLMSG_DONE:
                        return
                    if kind == _NLMSG_ERROR:
                        err = -struct.unpack_from("=i", data, off + 16)[0]
                        raise OSError(err, f"sock_diag: {os.strerror(err)}")
                    yield data, off + 16
                off += (length + 3) & ~3
        raise OSError("sock_diag: the dump did not end")

    def sockets(self, family: int, states: int) -> list[tuple[int, int, int]]:
        """(state, local port, inode) of each socket in the given states."""
        # inet_diag_msg: family, state, timer, retrans, then the sockid (source port first), ... inode at 68
        return [(data[o + 1], int.from_bytes(data[o + 4 : o + 6], "big"),
                 int.from_bytes(data[o + 68 : o + 72], sys.byteorder))
                for data, o in self._messages(family, states, ())]

    def count_states(self, family: int, ports: Sequence[int]) -> dict[int, int]:
        """Sockets by state whose local port is one of ports (filtered in the kernel)."""
        counts: dict[int, int] = {}
        for data, o in self._messages(family, _ALL_STATES, ports):
            state = data[o + 1]
            counts[state] = counts.get(state, 0) + 1
        return counts



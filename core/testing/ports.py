"""Free loopback ports for test nodes, without clashes between parallel test workers."""

from __future__ import annotations

import itertools
import os
import socket

#: :func:`free_port` hands out ports from PORT_BASE up, below the kernel's ephemeral range
#: (32768-60999 by default), which a port-0 bind or an outgoing connection never gets; each
#: pytest-xdist worker has its own block of PORT_BLOCK ports, so parallel workers never pick the
#: same one between choosing it and binding it.
PORT_BASE, PORT_BLOCK, PORT_BLOCKS = 12000, 1000, 20
_port_counter = itertools.count((os.getpid() * 7919) % PORT_BLOCK)


def _port_block_start() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw3"
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return PORT_BASE + (index % PORT_BLOCKS) * PORT_BLOCK


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` a moment ago, from this test worker's
    block (see PORT_BASE)."""
    start = _port_block_start()
    for _ in range(PORT_BLOCK):
        port = start + next(_port_counter) % PORT_BLOCK
        if _bindable(host, port):
            return port
    raise RuntimeError(f"no free port in {start}-{start + PORT_BLOCK - 1} on {host}")

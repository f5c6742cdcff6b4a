"""Addresses on this machine: a free port, and whether something answers at one.

>>> port = free_port()
>>> answers(f"127.0.0.1:{port}")
False
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` as a pair.

    >>> split_address("127.0.0.1:9092")
    ('127.0.0.1', 9092)
    """
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def answers(address: str, timeout: float = 0.3) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection(split_address(address), timeout=timeout):
            return True
    except OSError:
        return False

"""Addresses on this machine: a free port, and whether something answers at one.

>>> port = free_port()
>>> answers(f"127.0.0.1:{port}")
False
"""

from __future__ import annotations

import random
import socket

#: Where :func:`free_port` draws from: below Linux's ephemeral range (32768-60999), which the
#: system hands to outgoing connections. A port picked there (as binding port 0 does) can be
#: taken by a connection (a Kafka client's, say) before the process meant for it binds it: a
#: bench run's worker died with "address already in use".
PORTS = range(20_000, 32_768)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, outside the ephemeral range.

    >>> free_port() in PORTS
    True
    """
    for port in random.sample(PORTS, 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on 127.0.0.1 among 200 tried in {PORTS.start}-{PORTS.stop - 1}")


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

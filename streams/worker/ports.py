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
#: Ports this process handed out, or was told are its processes' (:func:`claim`): a port drawn
#: is free only until its process binds it, and a stack's worker failed to bind its configured
#: port because the storage, started first, had drawn the same one.
_TAKEN: set[int] = set()


def claim(*ports: int) -> None:
    """Ports this process's children will bind (configured ones, say): never drawn here.

    >>> before = set(_TAKEN)
    >>> claim(*PORTS[:-1])
    >>> free_port() == PORTS[-1]
    True
    >>> _TAKEN.clear(); _TAKEN.update(before)
    """
    _TAKEN.update(ports)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, outside the ephemeral range, and
    that this process neither handed out before nor was told is taken.

    >>> free_port() in PORTS
    True
    """
    candidates = [port for port in PORTS if port not in _TAKEN]
    for port in random.sample(candidates, min(200, len(candidates))):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _TAKEN.add(port)
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

"""Identifiers: how an event names its person besides (or instead of) a ``customer_id``.

An event may carry ``identifiers``, kind -> value: ``anonymous_id`` (a web or app cookie, a
device), ``loyalty_card``, ``email``, ``phone``, ``social_handle``, or any kind the worker
declares (``CRM360_IDENTIFIER_KINDS``). Written as one string, an identifier is
``kind:value``; a ``customer_id`` is its bare value.

Emails are kept only as the SHA-256 of the address trimmed and lower-cased, so an address
never reaches the log, the state or ClickHouse; a producer may send that digest itself (64
hexadecimal digits, kept as they are). Phones keep their digits and a leading ``+``.

Examples
--------
>>> identifier("customer_id", "c1"), identifier("anonymous_id", "a9f3")
('c1', 'anonymous_id:a9f3')
>>> normalized("email", " Ada@Example.com ") == normalized("email", "ada@example.com")
True
>>> len(normalized("email", "ada@example.com")), normalized("phone", "+44 (20) 7946-0958")
(64, '+442079460958')
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from pydantic import Field

CUSTOMER_ID = "customer_id"
#: The most identifiers one event may carry.
MAX_PER_EVENT = 8
#: A kind of identifier: lower-case letters, digits and underscores.
IdentifierKind = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def identifier(kind: str, value: str) -> str:
    """The identifier of ``value`` of ``kind``, as one string."""
    return value if kind == CUSTOMER_ID else f"{kind}:{value}"


def normalized(kind: str, value: str) -> str:
    """The value kept of an identifier of ``kind``: an email's digest, a phone's digits."""
    if kind == "email":
        address = value.strip().lower()
        return address if _SHA256.match(address) else hashlib.sha256(address.encode()).hexdigest()
    if kind == "phone":
        return ("+" if value.strip().startswith("+") else "") + "".join(c for c in value if c.isdigit())
    return value

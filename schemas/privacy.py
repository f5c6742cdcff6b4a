"""Privacy requests and their audit: who is suppressed, what an erasure asks of a partition's
owner, and the ``privacy_log`` rows that prove what was done.

None of them holds an identifier in the clear but :class:`Erasure`, which lives on the
``erasures`` topic until its retention: the log and the suppression list keep SHA-256 digests
(:func:`processors.privacy.identifier_hash`), enough to recognise an identifier seen again,
not to learn it.

Examples
--------
>>> erasure = Erasure(request_id="r1", identifier="c1", identifiers=["c1", "anonymous_id:d1"], asked_at=0)
>>> Erasure.model_validate_json(erasure.model_dump_json()) == erasure
True
>>> Suppression(identifier_hash="ab" * 32, request_id="r1", at=0).lifted
False
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

#: A SHA-256 digest in hexadecimal.
Digest = str


class Suppression(BaseModel):
    """An identifier whose events never rebuild a profile (``lifted``: no longer), on the
    compacted ``suppressions`` topic keyed by the digest."""

    model_config = ConfigDict(extra="forbid")

    identifier_hash: Digest = Field(pattern=r"^[0-9a-f]{64}$")
    request_id: str
    at: AwareDatetime
    lifted: bool = False


class Erasure(BaseModel):
    """What the owner of ``identifier``'s partition erases for request ``request_id``: the
    identifier's state, and every ClickHouse row naming any of ``identifiers`` (the person's
    identifiers known so far). On the ``erasures`` topic, keyed by ``identifier``."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    identifier: str
    identifiers: list[str]
    asked_at: AwareDatetime


class PrivacyRecord(BaseModel):
    """A row of ``privacy_log``: ``suppressed`` (the identifiers became suppressed), ``erased``
    (a partition's owner erased one identifier's state, ``customer_states`` of them, and the
    rows of every table naming the person, ``removed`` rows per table) or ``lifted``."""

    request_id: str
    at: AwareDatetime
    action: Literal["suppressed", "erased", "lifted"]
    identifier_hashes: list[Digest]
    customer_states: int = 0
    removed: dict[str, int] = Field(default_factory=dict)

"""The identity graph, kept in the stream: every identifier resolves to one profile, and two
profiles that an event links merge into one, with no lock and no coordinator.

Each identifier's record lives in the customer table under the identifier, in the
identifier's partition, so only the worker process that owns the partition reads or writes
it. A record is either a profile (a customer state; once it took part in a link, its
``identity`` lists its identifiers), or an identifier merged into another profile
(``identity.merged_into``), which events and links that reach it follow.

What involves other partitions travels as :class:`Op` messages to the identifier that handles
them (the worker sends them on a topic co-partitioned with the input topics); an op for the
record that sends it is handled at once, as is the link of an event that names several
identifiers (:meth:`IdentityGraph.link`):

``link``
    An event named ``other`` beside an identifier of ``target``'s profile: the profile sends
    ``other`` a ``union``, or handles it itself if it ranks first.
``union``
    ``target``'s profile (created if the identifier is new) and the profile ``other`` are one
    person. The one that ranks first (:func:`processors.identity.rank`) survives: if it is
    ``target``'s, it asks ``other`` to ``surrender`` and waits; else it sends ``other`` a
    ``union``, which then does.
``surrender``
    ``target``'s profile is asked to merge into ``other`` (whose identifiers, those it is
    joining included, come along). Unless a guard refuses (``refused``), it becomes a merged
    identifier and sends its state (``absorb``); one that merged elsewhere meanwhile says where
    (``moved``). A surrender marked ``plain`` is taken only by a profile of one identifier of a
    kind not unique (a device); another answers ``declined``, and is asked again alone.
``absorb``
    The survivor folds the state in (:func:`processors.profile_merge.merge_profiles`), takes
    its identifiers and ``repoint``s them to itself, so later events take one hop at most.
``refused``, ``moved``, ``declined``
    The survivor stops waiting (after a move, it sends a ``union`` to where the other went).
``event``
    An event that reached a merged identifier, on its way to the profile.

A profile asks every device it links to join it at once (``plain``: each adds one identifier
that no guard but the cap can refuse, and the surrenders carry them all, so the cap counts
them) and absorbs any other profile alone: so the guards decide as if the absorptions came
one by one, while a person's devices merge in one round trip instead of one each. It keeps
what reaches it meanwhile for after, and only waits for profiles that rank after it, so no
two profiles ever wait for each other.

Delivery is at least once, and in order from one sender to one partition (the topic's partition
keeps it): a ``repoint`` that overtook a ``surrender`` sent before it left the survivor
waiting for ever (docs/performance.md, session 38). A worker that restarts from its last
checkpoint reads again what it read since and sends again what it sent. The caller makes the record an op changed durable
before it sends what handling the op produced, which the record keeps in its ``outbox`` until
the caller says it is sent (:meth:`IdentityGraph.sent`); a record that meets an op with its
outbox full sends it again first. So no step is lost between a change and its messages, and
every op can come twice, in any interleaving with the events. A second ``absorb`` finds no
profile waiting for it, a second ``surrender`` a merged identifier, a second ``event`` is a
duplicate to the customer state, and a surrender that reaches an identifier restored to before
it existed finds a new, empty profile, whose events, read again, follow it. A merged identifier
keeps its state until its ``absorb`` is sent: events read again meanwhile that the state holds
are not sent on (they reach the profile in the state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

import orjson

from processors.config import FeatureConfig, IdentityConfig, ModelConfig
from processors.features import CustomerState, recall
from processors.identity import Identity, Rank, conflict, kind_of, rank
from processors.profile_merge import merge_profiles
from schemas.events import BaseEvent, parse_event_json

OpKind = Literal["link", "union", "surrender", "absorb", "refused", "moved", "declined", "repoint", "event"]

#: A surrender's ``payload``: only a profile of one identifier of a kind not unique takes it.
PLAIN = "plain"
#: A union's ``payload``: the other declined a plain surrender, ask it alone.
ALONE = "alone"


@dataclass(frozen=True, slots=True)
class Op:
    """A step of the graph's work, for the partition of ``target`` (see the module's text for
    what ``other`` and ``payload`` hold in each kind)."""

    kind: OpKind
    target: str
    other: str = ""
    #: Event time of the event that linked the profiles.
    at: float = 0.0
    #: Of a surrender: the survivor's identifiers.
    identifiers: tuple[str, ...] = ()
    #: An absorbed state's JSON, a refusal's reason, where a profile moved, an event's JSON.
    payload: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Its fields (``dataclasses.asdict`` copies deeply: a third of an op's cost)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Op:
        return cls(**data | {"identifiers": tuple(data["identifiers"])})

    @classmethod
    def from_json(cls, raw: bytes) -> Op:
        """
        >>> op = Op("surrender", "email:x", other="c1", at=5.0, identifiers=("c1", "anonymous_id:a"))
        >>> Op.from_json(op.to_json()) == op
        True
        """
        return cls.from_dict(orjson.loads(raw))

    @staticmethod
    def pack(ops: list[Op], limit: int = 256 * 1024) -> list[bytes]:
        """The ops as JSON arrays of about ``limit`` bytes at most, in order (one Kafka record
        each: a record per op cost faust's per-message work on every one).

        >>> ops = [Op("link", "c1", other="email:x"), Op("union", "c1", other="c2")]
        >>> packed = Op.pack(ops)
        >>> len(packed), [op for raw in packed for op in Op.unpack(raw)] == ops
        (1, True)
        >>> len(Op.pack(ops, limit=10)), Op.unpack(ops[0].to_json()) == ops[:1]  # one op: a record of before
        (2, True)
        """
        records: list[bytes] = []
        run: list[bytes] = []
        size = 0
        for op in ops:
            raw = op.to_json()
            if run and size + len(raw) > limit:
                records.append(b"[" + b",".join(run) + b"]")
                run, size = [], 0
            run.append(raw)
            size += len(raw) + 1
        if run:
            records.append(b"[" + b",".join(run) + b"]")
        return records

    @classmethod
    def unpack(cls, raw: bytes) -> list[Op]:
        """The ops of a record: a JSON array of them, or one (as records were before arrays)."""
        data = orjson.loads(raw)
        return [cls.from_dict(item) for item in data] if isinstance(data, list) else [cls.from_dict(data)]


@dataclass(frozen=True, slots=True)
class Decision:
    """A merge, or a link refused by a guard, as the ``identity_merges`` table records it."""

    at: float
    survivor: str
    absorbed: str
    #: The absorbed profile's identifiers (of a refusal: none moved).
    identifiers: tuple[str, ...]
    outcome: Literal["merged", "refused"]
    rule: str


class Records(Protocol):
    """The records of one partition's identifiers."""

    def get(self, key: str) -> CustomerState | None: ...

    def put(self, key: str, state: CustomerState) -> None: ...


@dataclass
class Handled:
    """What handling an op gives: ops to send, decisions to record, and events to apply here
    (profile, event JSON)."""

    ops: list[Op] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)


class IdentityGraph:
    """The graph's work in the partitions whose records ``records`` holds."""

    def __init__(self, records: Records, config: IdentityConfig, features: FeatureConfig, models: ModelConfig) -> None:
        self.records = records
        self.config = config
        self.features = features
        self.models = models
        self._changed = False
        #: Records whose outbox this process filled and has not sent yet.
        self._unsent: set[str] = set()

    def link(self, key: str, others: Sequence[str], at: float) -> list[Op]:
        """Join ``others`` to the profile of ``key``, whose record, stored, holds an event at
        event time ``at`` that named them beside it: ``link`` ops, handled at once. As after
        :meth:`handle`, the caller makes the record durable before it sends the ops they give,
        then calls :meth:`sent`."""
        return [sent for other in others for sent in self.handle(Op("link", key, other=other, at=at)).ops]

    def _links(self, state: CustomerState, others: Sequence[str], at: float) -> list[Op]:
        """The ops that join ``others`` to the profile ``state``. Each union goes to the one of
        the two that ranks first, which asks the other to surrender (sent to the other, it would
        come back first)."""
        mine = state.customer_id
        identity = self._identity(state)
        first = rank(mine, self.config)
        return [
            Op("union", mine, other=name, at=at)
            if first < rank(name, self.config)
            else Op("union", name, other=mine, at=at)
            for name in others
            if name not in identity.identifiers
        ]

    @staticmethod
    def follow(state: CustomerState, event: BaseEvent) -> str | None:
        """Where an event that reached a merged identifier goes: to its profile, unless the
        state it keeps until the profile confirms the merge holds the event already (it
        reaches the profile in that state; sent on, it would come twice)."""
        identity = state.identity
        assert identity is not None and identity.merged_into is not None
        if identity.identifiers and recall(state, event, event.epoch) == "duplicate":
            return None
        return identity.merged_into

    def handle(self, op: Op) -> Handled:
        """Handle ``op``, in the partition of its target. If the target's record changed, the
        caller writes it durably before it sends the ops; then it calls :meth:`sent`."""
        before = self.records.get(op.target)
        # An outbox this process filled is sent with its batch; one a restart restored, now.
        restored = op.target not in self._unsent and before is not None and before.identity is not None
        resend = [Op.from_dict(data) for data in before.identity.outbox] if restored else []  # type: ignore[union-attr]
        if resend:
            self._unsent.add(op.target)
        handled = Handled()
        self._changed = False
        self._handle_here(op, handled)
        new = handled.ops
        handled.ops = resend + new
        if self._changed and new:
            state = self.records.get(op.target)
            assert state is not None and state.identity is not None
            state.identity.outbox += [sent.to_dict() for sent in new]
            self.records.put(op.target, state)
            self._unsent.add(op.target)
        return handled

    def sent(self, key: str) -> None:
        """The ops of :meth:`handle` for ``key`` are sent: a merged identifier's state is in
        its profile's way. (An outbox that no :meth:`handle` gave out is kept: restored, it
        goes with the next op that reaches the record.)"""
        if key not in self._unsent:
            return
        self._unsent.discard(key)
        state = self.records.get(key)
        identity = state.identity if state is not None else None
        if identity is None or not identity.outbox:
            return
        if identity.merged_into is not None:
            self.records.put(key, CustomerState(key, identity=Identity(merged_into=identity.merged_into)))
        else:
            identity.outbox = []
            self.records.put(key, state)  # type: ignore[arg-type]

    def _put(self, key: str, state: CustomerState) -> None:
        self._changed = True
        self.records.put(key, state)

    def _handle_here(self, op: Op, out: Handled) -> None:
        """Handle ``op``, and at once the ops it sends to its own target (sent, they would come
        back to it a hop later: an event's link asks its own profile to unite)."""
        todo = [op]
        while todo:
            self._handle(todo.pop(0), out)
            todo += [sent for sent in out.ops if sent.target == op.target]
            out.ops = [sent for sent in out.ops if sent.target != op.target]

    def _handle(self, op: Op, out: Handled) -> None:
        state = self.records.get(op.target)
        identity = state.identity if state is not None else None
        went = identity.merged_into if identity is not None else None
        if went is not None:
            assert state is not None and identity is not None
            self._merged(op, state, identity, went, out)
        elif op.kind == "event":
            out.events.append((op.target, op.payload))
        elif op.kind == "link":
            state = state or CustomerState(op.target)
            out.ops += self._links(state, [op.other], op.at)
            self._put(op.target, state)
        elif op.kind == "union":
            self._union(op, state or CustomerState(op.target), out)
        elif op.kind == "surrender":
            self._surrender(op, state or CustomerState(op.target), out)
        elif state is not None and identity is not None and self._waits_for(identity, op):
            self._answered(op, state, identity, out)
        # else: an answer delivered again, for a profile that no longer waits for it

    @staticmethod
    def _waits_for(identity: Identity, op: Op) -> bool:
        """Whether ``op`` answers a profile that ``identity``'s waits for (a decline answers
        only a profile asked with others)."""
        return op.other in identity.joining or (identity.absorbing == op.other and op.kind != "declined")

    def _merged(self, op: Op, state: CustomerState, identity: Identity, went: str, out: Handled) -> None:
        """An op for an identifier merged into ``went``."""
        if op.kind == "event":
            onward = self.follow(state, parse_event_json(op.payload.encode()))
            if onward is not None:
                out.ops.append(replace(op, target=onward))
        elif op.kind in ("link", "union"):
            out.ops.append(replace(op, target=went))
        elif op.kind == "repoint" and op.other != op.target:
            identity.merged_into = op.other
            self._put(op.target, state)
        elif op.kind == "surrender" and op.other != went:
            out.ops.append(Op("moved", op.other, other=op.target, payload=went))

    def _identity(self, state: CustomerState) -> Identity:
        if state.identity is None:
            state.identity = Identity([state.customer_id])
        return state.identity

    def _union(self, op: Op, state: CustomerState, out: Handled) -> None:
        identity = self._identity(state)
        if op.other in identity.identifiers or op.other in identity.refused or op.other in identity.joining:
            return  # one profile already, refused before, or asked already
        if identity.absorbing is not None:
            identity.waiting.append(op.to_dict())
        elif rank(op.target, self.config) < rank(op.other, self.config):
            # A profile of an identifier of a unique kind never joins with others: asked alone.
            alone = op.payload == ALONE or kind_of(op.other, self.config) in self.config.unique_kinds
            if alone:
                identity.absorbing = op.other
            else:
                identity.joining.append(op.other)
            out.ops.append(
                Op(
                    "surrender",
                    op.other,
                    other=op.target,
                    at=op.at,
                    identifiers=tuple(identity.identifiers + identity.joining),
                    payload="" if alone else PLAIN,
                )
            )
        else:
            out.ops.append(Op("union", op.other, other=op.target, at=op.at))
        self._put(op.target, state)

    def _surrender(self, op: Op, state: CustomerState, out: Handled) -> None:
        identity = self._identity(state)
        if identity.absorbing is not None or identity.joining:
            identity.waiting.append(op.to_dict())
        elif op.payload == PLAIN and not self._plain(identity):
            out.ops.append(Op("declined", op.other, other=op.target, at=op.at))
        elif (reason := conflict(identity.identifiers, list(op.identifiers), self.config)) is not None:
            out.ops.append(Op("refused", op.other, other=op.target, at=op.at, payload=reason))
        else:
            identity.merged_into = op.other  # its state is kept until the absorb is sent
            out.ops.append(Op("absorb", op.other, other=op.target, at=op.at, payload=state.to_json().decode()))
        self._put(op.target, state)

    def _plain(self, identity: Identity) -> bool:
        """Whether the profile is one identifier of a kind not unique (a device)."""
        (name, *more) = identity.identifiers
        return not more and kind_of(name, self.config) not in self.config.unique_kinds

    def _answered(self, op: Op, state: CustomerState, identity: Identity, out: Handled) -> None:
        """The profile ``op.other`` that this one waited for answered: absorb, refused, moved
        or (asked with others) declined."""
        if identity.absorbing == op.other and op.kind != "declined":
            identity.absorbing = None
        else:
            identity.joining.remove(op.other)
        if op.kind == "declined":  # it holds more than one device: asked again, alone
            identity.waiting.append(Op("union", op.target, other=op.other, at=op.at, payload=ALONE).to_dict())
        elif op.kind == "moved":  # unite with where it went
            out.ops.append(Op("union", op.payload, other=op.target, at=op.at))
        elif op.kind == "refused":
            identity.refused = (identity.refused + [op.other])[-self.config.max_identifiers :]
            self._decided(Decision(op.at, op.target, op.other, (), "refused", op.payload), identity, out)
        elif op.kind == "absorb":
            absorbed = CustomerState.from_json(op.payload.encode())
            merge_profiles(state, absorbed, self.features, self.models)
            theirs = absorbed.identity or Identity([op.other])
            identity.identifiers += [name for name in theirs.identifiers if name not in identity.identifiers]
            identity.history += theirs.history
            identity.refused = (identity.refused + theirs.refused)[-self.config.max_identifiers :]
            rule = self._rule(rank(op.target, self.config), rank(op.other, self.config))
            self._decided(
                Decision(op.at, op.target, op.other, tuple(theirs.identifiers), "merged", rule), identity, out
            )
            out.ops += [Op("repoint", name, other=op.target) for name in theirs.identifiers if name != op.other]
        waiting, identity.waiting = identity.waiting, []
        self._put(op.target, state)
        self._resume(op.target, waiting, out)

    def _decided(self, decision: Decision, identity: Identity, out: Handled) -> None:
        out.decisions.append(decision)
        identity.history = (identity.history + [asdict(decision)])[-self.config.history :]

    def _resume(self, key: str, waiting: list[dict[str, Any]], out: Handled) -> None:
        """Handle what waited, in order, until the profile waits again (it absorbs a profile
        alone, or what it handled waits once more)."""
        for index, data in enumerate(waiting):
            self._handle(Op.from_dict(data), out)
            state = self.records.get(key)
            identity = state.identity if state is not None else None
            if identity is not None and (identity.absorbing is not None or identity.waiting):
                identity.waiting += waiting[index + 1 :]
                self._put(key, state)  # type: ignore[arg-type]
                return

    def _rule(self, survivor: Rank, absorbed: Rank) -> str:
        """Why the survivor survived (see :func:`processors.identity.rank`)."""
        if survivor[0] != absorbed[0]:
            return f"{self.config.kinds[survivor[0]]} outlasts {self.config.kinds[absorbed[0]]}"
        return "the first by name survives"

"""Hypothesis strategies for any protobuf request, derived from its generated descriptor.

Every field is walked: strings (empty, huge, unicode, NUL, injection-shaped, and ids the fuzz run has already
seen answered, so requests reach past "not found" into the use cases), integers at 0, +-1 and the bounds of
their wire type, enums with unknown numbers, repeated and nested messages (Timestamp, Duration, Money, ...),
and oneofs (at most one member set, as protobuf keeps it). Any field may be left unset.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)
# Plausible timestamps are near the run's start (fixed once: a strategy must draw the same way every time).
NOW = int(time.time())

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: INT32, FieldDescriptor.TYPE_SINT32: INT32, FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64, FieldDescriptor.TYPE_SINT64: INT64, FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32, FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64, FieldDescriptor.TYPE_FIXED64: UINT64,
}

# Strings a hostile or careless caller sends. 4096 is the kit's default string limit; one past it is refused.
BOUNDARY_STRINGS = (
    "", " ", "\x00", "a\x00b", "\t\n", "é", "Ωmega-账户", "😀" * 8, "\u202eevil", "x" * 4096, "x" * 4097,
    "y" * 70_000, "' OR 1=1 --", "%s%n", "../../etc/passwd", "null", "-1", "0", "9" * 30, "ACCOUNT-1",
    "acct 1", "USD", "usd", "EUR", "XXX", "2026-01-01T00:00:00Z",
)


class SeenValues:
    """Strings that appeared in fuzzed requests the server accepted and in its answers (ids, tokens), so that
    later requests name things that exist: a hold that is open, an account that has Connects, a campaign."""

    LIMIT = 400

    def __init__(self) -> None:
        self.values: list[str] = []
        self._known: set[str] = set()

    def add(self, value: str) -> None:
        if value and len(value) <= 200 and value not in self._known and len(self.values) < self.LIMIT:
            self._known.add(value)
            self.values.append(value)

    def learn(self, message: Message) -> None:
        """Every string field of `message` (recursively) whose name ends in _id or _token, or is a code."""
        for field, value in message.ListFields():
            items: Iterable[Any] = value if field.is_repeated else (value,)
            if field.type == FieldDescriptor.TYPE_STRING and (
                    field.name.endswith(("_id", "_token", "_code")) or field.name in ("reference", "category")):
                for item in items:
                    self.add(item)
            elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
                for item in items:
                    self.learn(item)


def _strings(seen: SeenValues) -> st.SearchStrategy[str]:
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
    plain = st.one_of(st.sampled_from(BOUNDARY_STRINGS), text, st.uuids().map(str),
                      st.from_regex(r"\A[a-z]{1,8}-[0-9]{1,4}\Z"))
    # The pool grows while the run goes on: draw an index (the same shape of draw every time, as hypothesis
    # requires) and read the pool when the value is built.
    known = st.integers(0, SeenValues.LIMIT - 1).map(
        lambda i: seen.values[i % len(seen.values)] if seen.values else "")
    return st.one_of(plain, known, known)


def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (0, 1, -1, 2, 3, 7, 10, 100, 1000, 10**6, 10**9, 2**31 - 1, -(2**31), 2**31,
                                2**53, 2**63 - 1, -(2**63), 2**63 - 2, lo, lo + 1, hi, hi - 1) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(0, 200), st.integers(lo, hi))


def _enum(field: FieldDescriptor) -> st.SearchStrategy[int]:
    known = [v.number for v in field.enum_type.values]
    unknown = [-1, max(known) + 1, 99, INT32[1], INT32[0]]
    return st.one_of(st.sampled_from(known), st.sampled_from(unknown))


def _plausible_scalar(field: FieldDescriptor, seen: SeenValues, depth: int) -> st.SearchStrategy[Any]:
    """A value a well-behaved caller would send: known ids, small positive amounts, named enum values."""
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        if field.name.endswith("currency_code") or field.name == "currency":
            return st.sampled_from(("USD", "USD", "EUR"))
        ids = st.from_regex(r"\A[a-z]{2,6}-[0-9]{1,3}\Z")
        known = st.integers(0, SeenValues.LIMIT - 1).map(
            lambda i: seen.values[i % len(seen.values)] if seen.values else "fuzz-1")
        return st.one_of(known, known, ids)
    if t in _INT_RANGES:
        lo, _ = _INT_RANGES[t]
        return st.integers(1, 120) if lo == 0 or "size" in field.name else st.one_of(st.integers(1, 120),
                                                                                    st.integers(-3, 0))
    if t == FieldDescriptor.TYPE_ENUM:
        named = [v.number for v in field.enum_type.values if v.number != 0]
        return st.sampled_from(named or [0])
    if t == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name == "google.protobuf.Timestamp":
            return st.builds(lambda s: GetMessageClass(field.message_type)(seconds=s),
                             st.integers(NOW - 40 * 86_400, NOW + 40 * 86_400))
        if name == "google.protobuf.Duration":
            return st.builds(lambda s: GetMessageClass(field.message_type)(seconds=s), st.integers(60, 86_400))
        return message_strategy(field.message_type, seen, depth + 1, plausible=True)
    return _scalar(field, seen, depth)


def _scalar(field: FieldDescriptor, seen: SeenValues, depth: int) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return _strings(seen)
    if t in _INT_RANGES:
        return _integers(*_INT_RANGES[t])
    if t == FieldDescriptor.TYPE_ENUM:
        return _enum(field)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        width = 32 if t == FieldDescriptor.TYPE_FLOAT else 64
        return st.floats(width=width, allow_nan=True, allow_infinity=True)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_MESSAGE:
        return message_strategy(field.message_type, seen, depth + 1)
    raise AssertionError(f"no strategy for field type {t} ({field.full_name})")


def message_strategy(descriptor: Descriptor, seen: SeenValues, depth: int = 0, *,
                     plausible: bool = False) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`'s type: any subset of fields set to hostile values, or (`plausible`) every
    field set as a well-behaved caller would, except one field in three that gets a hostile value."""
    cls = GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.containing_oneof is not None and not field.containing_oneof.name.startswith("_"):
            continue  # a real oneof: chosen below, one member at most
        value = _scalar(field, seen, depth)
        if plausible:
            value = st.one_of(_plausible_scalar(field, seen, depth), _plausible_scalar(field, seen, depth), value)
        fields[field.name] = st.lists(value, max_size=4) if field.is_repeated else value
    pick = _plausible_scalar if plausible else _scalar
    oneofs = [[(f.name, pick(f, seen, depth)) for f in o.fields]
              for o in descriptor.oneofs if not o.name.startswith("_")]

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for name, strategy in fields.items():
            if plausible or draw(st.booleans()):
                _set(message, name, draw(strategy))
        for members in oneofs:
            choice = draw(st.integers(-1, len(members) - 1))
            if choice >= 0:
                name, strategy = members[choice]
                _set(message, name, draw(strategy))
        return message

    return build()


def _set(message: Message, name: str, value: Any) -> None:
    field = message.DESCRIPTOR.fields_by_name[name]
    target = getattr(message, name) if field.is_repeated or field.type == FieldDescriptor.TYPE_MESSAGE else None
    if field.is_repeated:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, name, value)


def request_strategy(message_class: type[Message], seen: SeenValues) -> st.SearchStrategy[Message]:
    """Hostile requests, and (twice as often) plausible ones that get past validation into the use cases."""
    descriptor = message_class.DESCRIPTOR
    plausible = message_strategy(descriptor, seen, plausible=True)
    return st.one_of(message_strategy(descriptor, seen), plausible, plausible)

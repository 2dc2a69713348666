"""Commands the ledger accepts. Every field is validated here, once, on construction."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from datetime import timedelta
from enum import Enum
from typing import ClassVar

from services.connects.domain.model import LotSource, ReturnReason, SpendReason
from services.kit.errors import InvalidArgument

MAX_ID_LEN = 128
MAX_REFERENCE_LEN = 256
MAX_AMOUNT = 2**63 - 1  # what the journal's int64 columns can hold: INVALID_FIELD above it
# The business maximum of one Credit, Spend, Hold, IncreaseHold or Capture (ADSMON_CONNECTS_MAX_AMOUNT): far above
# any bundle, grant or bid, far below what would let a hostile caller push the system accounts' sums past int64.
DEFAULT_MAX_AMOUNT = 1_000_000
MIN_HOLD_TTL = timedelta(seconds=1)
MAX_HOLD_TTL = timedelta(days=90)
DEFAULT_HOLD_TTL = timedelta(days=14)
MAX_PAGE_SIZE = 1000
# Request ids the ledger makes for itself (e.g. the jobs consumer's returns) start with this; clients may not
# use it, so no client request can ever take (and block) an internal one.
RESERVED_REQUEST_ID_PREFIX = "connects-internal:"


class InternalRequestId(str):
    """A request id in the reserved namespace, made only by `internal_request_id` (never from client input)."""

    __slots__ = ()


def internal_request_id(kind: str, key: str) -> InternalRequestId:
    """The ledger's own idempotency key for `kind` of work on `key` (e.g. "job-return", a transaction id)."""
    return InternalRequestId(f"{RESERVED_REQUEST_ID_PREFIX}{kind}:{key}")


def check_id(field: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument("INVALID_FIELD", f"{field} is required", field=field)
    if len(value) > MAX_ID_LEN:
        raise InvalidArgument("FIELD_TOO_LONG", f"{field} is longer than {MAX_ID_LEN} characters",
                              field=field, max_length=MAX_ID_LEN)
    if not value.isprintable():
        raise InvalidArgument("INVALID_FIELD", f"{field} contains control characters", field=field)


def check_request_id(value: str) -> None:
    check_id("request_id", value)
    if value.startswith(RESERVED_REQUEST_ID_PREFIX) and not isinstance(value, InternalRequestId):
        raise InvalidArgument("RESERVED_REQUEST_ID",
                              f"request_id must not start with {RESERVED_REQUEST_ID_PREFIX!r} (reserved)",
                              field="request_id", prefix=RESERVED_REQUEST_ID_PREFIX)


def check_amount(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument("INVALID_FIELD", f"{field} must be an integer", field=field)
    if value <= 0:
        raise InvalidArgument("AMOUNT_NOT_POSITIVE", f"{field} must be at least 1", field=field)
    if value > MAX_AMOUNT:
        raise InvalidArgument("INVALID_FIELD", f"{field} must be at most 2^63-1", field=field)


def check_amount_bound(cmd: object, maximum: int) -> None:
    """AMOUNT_TOO_LARGE if an amount of `cmd` (its `amount_fields`) is above the business `maximum`."""
    for name in getattr(cmd, "amount_fields", ()):
        value = getattr(cmd, name)
        if value > maximum:
            raise InvalidArgument("AMOUNT_TOO_LARGE", f"{name} must be at most {maximum} Connects", field=name,
                                  maximum=maximum)


def check_reference(value: str) -> None:
    if len(value) > MAX_REFERENCE_LEN:
        raise InvalidArgument("FIELD_TOO_LONG", f"reference is longer than {MAX_REFERENCE_LEN} characters",
                              field="reference", max_length=MAX_REFERENCE_LEN)
    if not value.isprintable():
        raise InvalidArgument("INVALID_FIELD", "reference contains control characters", field="reference")


def check_enum(field: str, value: object, enum: type[Enum]) -> None:
    if not isinstance(value, enum):
        raise InvalidArgument("UNKNOWN_ENUM_VALUE", f"{field} must be one of {[e.value for e in enum]}",
                              field=field)


@dataclass(frozen=True)
class Command:
    """A mutation with its idempotency key."""

    method: ClassVar[str] = ""
    # Fields that are amounts of Connects (checked against the business maximum by `check_amount_bound`).
    amount_fields: ClassVar[tuple[str, ...]] = ()
    request_id: str

    def __post_init__(self) -> None:
        check_request_id(self.request_id)

    def fingerprint(self) -> str:
        """Hash of the canonical request without its request_id: same id + other content is refused."""
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "request_id"}
        canonical = json.dumps({"method": self.method, **body}, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Credit(Command):
    method: ClassVar[str] = "Credit"
    amount_fields: ClassVar[tuple[str, ...]] = ("amount",)
    account_id: str
    amount: int
    source: LotSource
    reference: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("account_id", self.account_id)
        check_amount("amount", self.amount)
        check_enum("source", self.source, LotSource)
        if self.source is LotSource.RETURN:
            # RETURN lots keep the returned lots' expiry and post against revenue: only the return rule makes them.
            raise InvalidArgument("SOURCE_NOT_ALLOWED", "RETURN lots are made only by ReturnConnects "
                                  "(or the automatic return of a cancelled or removed job), not by Credit",
                                  field="source")
        check_reference(self.reference)


@dataclass(frozen=True)
class Spend(Command):
    method: ClassVar[str] = "Spend"
    amount_fields: ClassVar[tuple[str, ...]] = ("amount",)
    account_id: str
    amount: int
    reason: SpendReason
    reference: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("account_id", self.account_id)
        check_amount("amount", self.amount)
        check_enum("reason", self.reason, SpendReason)
        check_reference(self.reference)


@dataclass(frozen=True)
class PlaceHold(Command):
    method: ClassVar[str] = "Hold"
    amount_fields: ClassVar[tuple[str, ...]] = ("amount",)
    account_id: str
    amount: int
    reason: SpendReason
    reference: str = ""
    ttl: timedelta = DEFAULT_HOLD_TTL

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("account_id", self.account_id)
        check_amount("amount", self.amount)
        check_enum("reason", self.reason, SpendReason)
        check_reference(self.reference)
        if not MIN_HOLD_TTL <= self.ttl <= MAX_HOLD_TTL:
            raise InvalidArgument("TTL_OUT_OF_RANGE", "ttl must be between 1 second and 90 days", field="ttl")


@dataclass(frozen=True)
class CaptureHold(Command):
    method: ClassVar[str] = "CaptureHold"
    amount_fields: ClassVar[tuple[str, ...]] = ("amount",)
    hold_id: str
    amount: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("hold_id", self.hold_id)
        check_amount("amount", self.amount)


@dataclass(frozen=True)
class IncreaseHold(Command):
    """Grow an open hold to `new_amount` Connects in all (a raised boost bid)."""

    method: ClassVar[str] = "IncreaseHold"
    amount_fields: ClassVar[tuple[str, ...]] = ("new_amount",)
    hold_id: str
    new_amount: int

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("hold_id", self.hold_id)
        check_amount("new_amount", self.new_amount)


@dataclass(frozen=True)
class ReleaseHold(Command):
    method: ClassVar[str] = "ReleaseHold"
    hold_id: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("hold_id", self.hold_id)


@dataclass(frozen=True)
class ReturnConnects(Command):
    method: ClassVar[str] = "ReturnConnects"
    spend_transaction_id: str
    reason: ReturnReason

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("spend_transaction_id", self.spend_transaction_id)
        check_enum("reason", self.reason, ReturnReason)


@dataclass(frozen=True)
class ReverseCredit(Command):
    """Take back the unspent Connects of a PURCHASE credit (billing, after a chargeback)."""

    method: ClassVar[str] = "ReverseCredit"
    credit_transaction_id: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("credit_transaction_id", self.credit_transaction_id)


@dataclass(frozen=True)
class ExpireLots:
    """Scheduled: expire the due lots of one account (no request id: idempotent by nature)."""

    method: ClassVar[str] = "ExpireLots"
    account_id: str


@dataclass(frozen=True)
class ExpireHold:
    """Scheduled: release one hold past its ttl as EXPIRED (idempotent by nature)."""

    method: ClassVar[str] = "ExpireHold"
    hold_id: str


def check_page_size(page_size: int) -> int:
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("INVALID_FIELD", f"page_size must be between 0 and {MAX_PAGE_SIZE}",
                              field="page_size")
    return page_size or 50

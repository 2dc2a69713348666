"""Billing's commands: each validates itself on construction and fingerprints for idempotency."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from typing import ClassVar

from services.billing.domain.membership import Plan
from services.kit.errors import InvalidArgument

MAX_ID_LEN = 128
MAX_TEXT_LEN = 256
# Account ids as the marketplace issues them (ours): letters, digits and `_ . : -`, starting alphanumeric.
ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def check_account_id(value: str) -> None:
    check_id("account_id", value)
    if not ACCOUNT_ID.fullmatch(value):
        raise InvalidArgument("INVALID_FIELD", "account_id is not an account id (letters, digits, _ . : -)",
                              field="account_id")


def check_id(field: str, value: str, max_len: int = MAX_ID_LEN) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument("INVALID_FIELD", f"{field} is required", field=field)
    if len(value) > max_len:
        raise InvalidArgument("INVALID_FIELD", f"{field} is longer than {max_len} characters", field=field,
                              max_length=max_len)
    if not value.isprintable() or value != value.strip():
        raise InvalidArgument("INVALID_FIELD", f"{field} contains control characters or surrounding spaces",
                              field=field)


def check_text(field: str, value: str, max_len: int = MAX_TEXT_LEN) -> None:
    if len(value) > max_len or not value.isprintable():
        raise InvalidArgument("INVALID_FIELD", f"{field} must be printable and at most {max_len} characters",
                              field=field, max_length=max_len)


@dataclass(frozen=True)
class Command:
    method: ClassVar[str] = ""
    request_id: str

    def __post_init__(self) -> None:
        check_id("request_id", self.request_id)

    def fingerprint(self) -> str:
        """Hash of the request without its request_id: the same id with other content is refused."""
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "request_id"}
        canonical = json.dumps({"method": self.method, **body}, sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PurchaseConnects(Command):
    method: ClassVar[str] = "PurchaseConnects"
    account_id: str
    payment_method: str
    bundle_id: str | None = None
    quantity: int | None = None
    agency: bool = False
    currency: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_account_id(self.account_id)
        check_id("payment_method", self.payment_method)
        if (self.bundle_id is None) == (self.quantity is None):
            raise InvalidArgument("INVALID_FIELD", "exactly one of bundle_id or quantity is required",
                                  field="item")
        if self.bundle_id is not None:
            check_id("bundle_id", self.bundle_id, 64)
        if self.currency:
            check_id("currency_code", self.currency, 3)


@dataclass(frozen=True)
class StartMembership(Command):
    method: ClassVar[str] = "StartMembership"
    account_id: str
    plan: Plan
    payment_method: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_account_id(self.account_id)
        if not isinstance(self.plan, Plan):
            raise InvalidArgument("INVALID_FIELD", "plan must be PLAN_BASIC or PLAN_FREELANCER_PLUS", field="plan")
        if self.plan is Plan.FREELANCER_PLUS or self.payment_method:
            check_id("payment_method", self.payment_method)


@dataclass(frozen=True)
class CancelMembership(Command):
    method: ClassVar[str] = "CancelMembership"
    account_id: str

    def __post_init__(self) -> None:
        super().__post_init__()
        check_account_id(self.account_id)


@dataclass(frozen=True)
class RecordChargeback(Command):
    method: ClassVar[str] = "RecordChargeback"
    purchase_id: str
    provider_reference: str
    reason: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_id("purchase_id", self.purchase_id, 64)
        check_id("provider_reference", self.provider_reference)
        check_text("reason", self.reason)

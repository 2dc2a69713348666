"""Billing's refusals: one class per reason (mapped to gRPC by the kit's interceptor)."""

from __future__ import annotations

from services.kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable


class BundleNotFound(NotFound):
    def __init__(self, bundle_id: str) -> None:
        super().__init__("BUNDLE_NOT_FOUND", f"no bundle {bundle_id!r} is on sale to this account type",
                         field="bundle_id", bundle_id=bundle_id)


class QuantityOutOfRange(InvalidArgument):
    def __init__(self, quantity: int, low: int, high: int) -> None:
        super().__init__("QUANTITY_OUT_OF_RANGE", f"quantity must be between {low} and {high} Connects",
                         field="quantity", min=low, max=high)


class CurrencyNotSupported(InvalidArgument):
    def __init__(self, currency: str, supported: str) -> None:
        super().__init__("CURRENCY_NOT_SUPPORTED", f"Connects are sold in {supported} only",
                         field="currency_code", supported=supported)


class PaymentDeclined(FailedPrecondition):
    def __init__(self, purchase_id: str, decline_code: str = "") -> None:
        super().__init__("PAYMENT_DECLINED", "the payment was declined; nothing was charged or credited",
                         purchase_id=purchase_id, decline_code=decline_code)


class PaymentProviderUnavailable(Unavailable):
    def __init__(self, detail: str = "") -> None:
        super().__init__("PAYMENT_PROVIDER_UNAVAILABLE",
                         "the payment provider did not answer; retry with the same request_id"
                         + (f" ({detail})" if detail else ""))


class PurchaseNotFound(NotFound):
    def __init__(self, purchase_id: str) -> None:
        super().__init__("PURCHASE_NOT_FOUND", f"no purchase {purchase_id!r}", field="purchase_id",
                         purchase_id=purchase_id)


class PurchaseNotCompleted(FailedPrecondition):
    def __init__(self, purchase_id: str, state: str) -> None:
        super().__init__("PURCHASE_NOT_COMPLETED", f"purchase {purchase_id} is {state}, not COMPLETED",
                         purchase_id=purchase_id, state=state)


class ChargebackAlreadyRecorded(AlreadyExists):
    def __init__(self, purchase_id: str, chargeback_id: str) -> None:
        super().__init__("CHARGEBACK_ALREADY_RECORDED", f"purchase {purchase_id} was already charged back",
                         purchase_id=purchase_id, chargeback_id=chargeback_id)


class RequestIdReused(AlreadyExists):
    def __init__(self, request_id: str) -> None:
        super().__init__("REQUEST_ID_REUSED", "request_id was already used for a different request",
                         request_id=request_id)


class MembershipAlreadyActive(FailedPrecondition):
    def __init__(self, account_id: str, plan: str) -> None:
        super().__init__("MEMBERSHIP_ALREADY_ACTIVE", f"account already has an active {plan} membership",
                         account_id=account_id, plan=plan)


class MembershipPending(FailedPrecondition):
    def __init__(self, account_id: str) -> None:
        super().__init__("MEMBERSHIP_PENDING", "the membership's first fee is still being processed by the payment "
                         "provider; cancel it once it is active", account_id=account_id)


class MembershipNotFound(NotFound):
    def __init__(self, account_id: str) -> None:
        super().__init__("MEMBERSHIP_NOT_FOUND", "the account has no paid membership", account_id=account_id)


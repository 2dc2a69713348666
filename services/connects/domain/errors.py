"""The ledger's business refusals, each with its gRPC code (via the kit) and reason."""

from __future__ import annotations

from services.kit.errors import AlreadyExists, FailedPrecondition, NotFound


class InsufficientConnects(FailedPrecondition):
    def __init__(self, account_id: str, requested: int, available: int) -> None:
        super().__init__("INSUFFICIENT_CONNECTS",
                         f"account {account_id} has {available} Connects available, {requested} needed",
                         requested=requested, available=available)


class BalanceLimitExceeded(FailedPrecondition):
    def __init__(self, account_id: str) -> None:
        super().__init__("BALANCE_LIMIT_EXCEEDED", f"account {account_id} would exceed 2^63-1 Connects")


class HoldNotFound(NotFound):
    def __init__(self, hold_id: str) -> None:
        super().__init__("HOLD_NOT_FOUND", f"hold {hold_id} does not exist", hold_id=hold_id)


class HoldNotOpen(FailedPrecondition):
    def __init__(self, hold_id: str, status: str) -> None:
        super().__init__("HOLD_NOT_OPEN", f"hold {hold_id} is already {status}", hold_id=hold_id,
                         status=status)


class HoldExpired(FailedPrecondition):
    def __init__(self, hold_id: str) -> None:
        super().__init__("HOLD_EXPIRED", f"hold {hold_id} passed its ttl and was released as EXPIRED",
                         hold_id=hold_id)


class CaptureExceedsHold(FailedPrecondition):
    def __init__(self, hold_id: str, requested: int, held: int) -> None:
        super().__init__("CAPTURE_EXCEEDS_HOLD", f"cannot capture {requested} from hold {hold_id} of {held}",
                         hold_id=hold_id, requested=requested, held=held)


class HoldDecreaseNotAllowed(FailedPrecondition):
    def __init__(self, hold_id: str, requested: int, held: int) -> None:
        super().__init__("HOLD_DECREASE_NOT_ALLOWED",
                         f"hold {hold_id} holds {held} Connects; it can only grow (asked for {requested})",
                         hold_id=hold_id, requested=requested, held=held)


class TotalOutOfRange(FailedPrecondition):
    """A journal total an int64 field cannot carry (only a journal written before amounts were bounded)."""

    def __init__(self, what: str) -> None:
        super().__init__("TOTAL_OUT_OF_RANGE", f"{what} does not fit in an int64", total=what)


class TransactionNotFound(NotFound):
    def __init__(self, transaction_id: str) -> None:
        super().__init__("TRANSACTION_NOT_FOUND", f"transaction {transaction_id} does not exist",
                         transaction_id=transaction_id)


class NotReturnable(FailedPrecondition):
    """The reason does not return Connects (rejected, hired someone else, expired, withdrawn)."""

    def __init__(self, reason: str) -> None:
        super().__init__("NOT_RETURNABLE", f"{reason} does not return Connects", return_reason=reason)


class TransactionNotReturnable(FailedPrecondition):
    def __init__(self, transaction_id: str, why: str) -> None:
        super().__init__("TRANSACTION_NOT_RETURNABLE", f"transaction {transaction_id} {why}",
                         transaction_id=transaction_id)


class AlreadyReturned(FailedPrecondition):
    def __init__(self, transaction_id: str) -> None:
        super().__init__("ALREADY_RETURNED", f"transaction {transaction_id} was already returned",
                         transaction_id=transaction_id)


class RequestIdReused(AlreadyExists):
    def __init__(self, request_id: str, method: str) -> None:
        super().__init__("REQUEST_ID_REUSED",
                         f"request_id {request_id!r} was already used for a different {method} request",
                         request_id=request_id)


class TransactionNotReversible(FailedPrecondition):
    def __init__(self, transaction_id: str) -> None:
        super().__init__("TRANSACTION_NOT_REVERSIBLE", f"transaction {transaction_id} is not a PURCHASE credit",
                         transaction_id=transaction_id)


class AlreadyReversed(FailedPrecondition):
    def __init__(self, transaction_id: str) -> None:
        super().__init__("ALREADY_REVERSED", f"credit {transaction_id} was already reversed",
                         transaction_id=transaction_id)

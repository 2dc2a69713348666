"""Ads' business refusals, each with its gRPC code (through the kit) and ErrorInfo reason."""

from __future__ import annotations

from services.kit.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied


class BidTooLow(FailedPrecondition):
    def __init__(self, amount: int, minimum: int) -> None:
        super().__init__("BID_TOO_LOW", f"bid_connects must be at least {minimum}, got {amount}",
                         field="bid_connects", minimum=minimum)


class BidTooHigh(InvalidArgument):
    def __init__(self, amount: int, maximum: int) -> None:
        super().__init__("INVALID_FIELD", f"bid_connects: at most {maximum} Connects, got {amount}",
                         field="bid_connects", maximum=maximum)


class AuctionClosed(FailedPrecondition):
    def __init__(self, job_id: str, status: str) -> None:
        super().__init__("AUCTION_CLOSED", f"the auction of job {job_id} is {status}: it takes no bids",
                         job_id=job_id, status=status)


class AuctionNotFound(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__("AUCTION_NOT_FOUND", f"no auction for job {job_id} (never posted, never bid on)",
                         job_id=job_id)


class ProposalOwnerMismatch(PermissionDenied):
    def __init__(self, proposal_id: str) -> None:
        super().__init__("PROPOSAL_OWNER_MISMATCH",
                         f"proposal {proposal_id} already bids for another freelancer", proposal_id=proposal_id)


class BidInProgress(Aborted):
    """Another PlaceBid for the proposal is waiting for the ledger; retry shortly."""

    def __init__(self, proposal_id: str) -> None:
        super().__init__("BID_IN_PROGRESS",
                         f"another bid on proposal {proposal_id} is being held; retry in a moment",
                         proposal_id=proposal_id)


class BadgeAlreadyActive(FailedPrecondition):
    def __init__(self, freelancer_id: str) -> None:
        super().__init__("BADGE_ALREADY_ACTIVE",
                         f"the badge of {freelancer_id} is already active; stop it first to change the maximum",
                         freelancer_id=freelancer_id)


class BadgePriceAboveMax(FailedPrecondition):
    def __init__(self, price: int, weekly_max: int) -> None:
        super().__init__("BADGE_PRICE_ABOVE_MAX",
                         f"the weekly badge price is {price} Connects, above the maximum of {weekly_max}",
                         field="weekly_max_connects", price=price, weekly_max=weekly_max)

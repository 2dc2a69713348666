"""The Connects ledger: a wallet of lots and holds, and its double-entry journal.

Pure Python. A `Wallet` is the aggregate (one per account): every change it
makes is a `LedgerTransaction` whose postings sum to zero, appended to
`wallet.pending` for the repository to store. System accounts (issuance,
sales, revenue, breakage, holds) are never rows that get updated: their
balance is the sum of their postings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from services.connects.domain import errors

LOT_LIFETIME = timedelta(days=365)
EXPIRING_SOON = timedelta(days=30)
MAX_CONNECTS = 2**63 - 1


class LotSource(StrEnum):
    PURCHASE = "PURCHASE"
    PLAN_GRANT = "PLAN_GRANT"
    BONUS = "BONUS"
    RETURN = "RETURN"


class SpendReason(StrEnum):
    PROPOSAL = "PROPOSAL"
    BOOST = "BOOST"
    BADGE = "BADGE"
    PROMOTED_PROFILE = "PROMOTED_PROFILE"


AD_REASONS = frozenset({SpendReason.BOOST, SpendReason.BADGE, SpendReason.PROMOTED_PROFILE})


class ReturnReason(StrEnum):
    JOB_CANCELLED_BEFORE_CONTRACT = "JOB_CANCELLED_BEFORE_CONTRACT"
    JOB_REMOVED_TOS = "JOB_REMOVED_TOS"
    PROPOSAL_REJECTED = "PROPOSAL_REJECTED"
    HIRED_OTHER = "HIRED_OTHER"
    JOB_EXPIRED = "JOB_EXPIRED"
    WITHDRAWN = "WITHDRAWN"


RETURNING_REASONS = frozenset({ReturnReason.JOB_CANCELLED_BEFORE_CONTRACT, ReturnReason.JOB_REMOVED_TOS})


class TransactionKind(StrEnum):
    CREDIT = "CREDIT"
    SPEND = "SPEND"
    HOLD = "HOLD"
    CAPTURE = "CAPTURE"
    RELEASE = "RELEASE"
    RETURN = "RETURN"
    EXPIRE = "EXPIRE"
    REVERSAL = "REVERSAL"


class HoldStatus(StrEnum):
    OPEN = "OPEN"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


ISSUANCE = "system:issuance"
SALES = "system:sales"
REVENUE = "system:revenue"
BREAKAGE = "system:breakage"
HOLDS = "system:holds"
SYSTEM_ACCOUNTS = (ISSUANCE, SALES, REVENUE, BREAKAGE, HOLDS)


def wallet_account(account_id: str) -> str:
    return f"wallet:{account_id}"


def new_id() -> str:
    return uuid.uuid4().hex


def job_of(reference: str) -> str | None:
    """The job a reference names: `job:<job_id>` or `job:<job_id>/...` (the marketplace convention)."""
    if not reference.startswith("job:"):
        return None
    job_id = reference[4:].split("/", 1)[0]
    return job_id or None


@dataclass
class Lot:
    """The Connects of one credit. `remaining` is available, `held` is reserved by open holds."""

    lot_id: str
    account_id: str
    source: LotSource
    origin_source: LotSource
    amount: int
    remaining: int
    held: int
    issued_at: datetime
    expires_at: datetime
    expired: int = 0

    @property
    def order(self) -> tuple[datetime, datetime, str]:
        """Spending order: first to expire first, then oldest, then id (deterministic)."""
        return (self.expires_at, self.issued_at, self.lot_id)

    def is_due(self, now: datetime) -> bool:
        return self.expires_at <= now


@dataclass(frozen=True)
class LotMovement:
    """`amount` Connects taken from (or credited to) one lot."""

    lot_id: str
    source: LotSource
    origin_source: LotSource
    amount: int
    expires_at: datetime

    @classmethod
    def of(cls, lot: Lot, amount: int) -> LotMovement:
        return cls(lot.lot_id, lot.source, lot.origin_source, amount, lot.expires_at)

    @property
    def listing_order(self) -> tuple[datetime, str]:
        """The order a transaction lists its movements in, in its event and wherever it is read back (the
        store keeps no position): by expiry, then lot id. Lots are *spent* in `Lot.order` (expiry, then issue
        time), which differs for lots expiring together, such as a returned lot beside an original one."""
        return (self.expires_at, self.lot_id)


@dataclass(frozen=True)
class Posting:
    """One leg of a double entry: a signed change of `ledger_account`'s balance."""

    ledger_account: str
    amount: int


@dataclass
class Hold:
    """Connects reserved from specific lots (`allocations`) until captured, released or expired."""

    hold_id: str
    account_id: str
    amount: int
    reason: SpendReason
    reference: str
    status: HoldStatus
    created_at: datetime
    expires_at: datetime
    allocations: tuple[LotMovement, ...]
    captured: int = 0
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class LedgerTransaction:
    """One immutable journal entry; its postings sum to zero."""

    transaction_id: str
    account_id: str
    kind: TransactionKind
    amount: int
    occurred_at: datetime
    postings: tuple[Posting, ...]
    movements: tuple[LotMovement, ...] = ()
    source: LotSource | None = None
    spend_reason: SpendReason | None = None
    return_reason: ReturnReason | None = None
    reference: str = ""
    hold_id: str = ""
    returned_transaction_id: str = ""
    available_after: int = 0
    held_after: int = 0
    sequence: int = 0

    def __post_init__(self) -> None:
        if sum(p.amount for p in self.postings) != 0:
            raise AssertionError(f"unbalanced transaction {self.transaction_id}: {self.postings}")

    @property
    def job_id(self) -> str | None:
        return job_of(self.reference)


@dataclass(frozen=True)
class Returnable:
    """What a return needs to know about the transaction it returns."""

    transaction: LedgerTransaction
    already_returned: bool


def is_returnable_kind(tx: LedgerTransaction) -> bool:
    """Proposal and boost spends, and boost captures, can be returned (if the reason allows)."""
    if tx.kind is TransactionKind.SPEND:
        return tx.spend_reason in (SpendReason.PROPOSAL, SpendReason.BOOST)
    return tx.kind is TransactionKind.CAPTURE and tx.spend_reason is SpendReason.BOOST


def _postings(*legs: tuple[str, int]) -> tuple[Posting, ...]:
    """Postings from (account, signed amount), merged per account, zero legs dropped."""
    merged: dict[str, int] = {}
    for account, amount in legs:
        merged[account] = merged.get(account, 0) + amount
    return tuple(Posting(a, v) for a, v in merged.items() if v)


@dataclass
class Wallet:
    """The aggregate of one account: its live lots, the holds loaded with it, and its journal position.

    Every public mutation first expires the lots past their date (lazy
    expiry), checks everything that can fail, then changes state and records
    exactly one transaction (plus EXPIRE entries), so a refused command leaves
    no partial change behind. One deliberate exception: capturing or releasing
    a hold past its ttl records its EXPIRED release (what the sweeper would
    record) before refusing with HOLD_EXPIRED.
    """

    account_id: str
    lots: dict[str, Lot] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    sequence: int = 0
    pending: list[LedgerTransaction] = field(default_factory=list)
    new_lots: set[str] = field(default_factory=set)
    changed_lots: set[str] = field(default_factory=set)
    new_holds: set[str] = field(default_factory=set)
    changed_holds: set[str] = field(default_factory=set)

    @classmethod
    def restore(cls, account_id: str, lots: Iterable[Lot], holds: Iterable[Hold] = (),
                sequence: int = 0) -> Wallet:
        return cls(account_id, {lot.lot_id: lot for lot in lots}, {h.hold_id: h for h in holds}, sequence)

    # ----- reading -------------------------------------------------------------------------

    @property
    def available(self) -> int:
        """Connects in lots not yet expired by an EXPIRE entry (what the wallet row stores)."""
        return sum(lot.remaining for lot in self.lots.values())

    @property
    def held(self) -> int:
        return sum(lot.held for lot in self.lots.values())

    def available_at(self, now: datetime) -> int:
        """Spendable now: excludes lots past their date even before their EXPIRE entry is written."""
        return sum(lot.remaining for lot in self.lots.values() if not lot.is_due(now))

    def expiring_within(self, now: datetime, window: timedelta = EXPIRING_SOON) -> int:
        return sum(lot.remaining for lot in self.lots.values() if now < lot.expires_at <= now + window)

    def held_expiring_within(self, now: datetime, window: timedelta = EXPIRING_SOON) -> int:
        """Held Connects whose lots expire by `now + window`: if their hold is released after that, they expire.

        Lots already past their date count too (what their holds give back expires at once)."""
        return sum(lot.held for lot in self.lots.values() if lot.expires_at <= now + window)

    def live_lots(self) -> list[Lot]:
        return sorted((lot for lot in self.lots.values() if lot.remaining or lot.held), key=lambda x: x.order)

    # ----- commands ------------------------------------------------------------------------

    def credit(self, *, amount: int, source: LotSource, reference: str, now: datetime,
               expires_at: datetime | None = None, origin_source: LotSource | None = None) -> LedgerTransaction:
        """Add a lot of `amount` Connects expiring one year from now."""
        self.expire_due_lots(now)
        self._check_limit(amount)
        lot = self._add_lot(source, origin_source or source, amount, now, expires_at or now + LOT_LIFETIME)
        contra = SALES if source is LotSource.PURCHASE else ISSUANCE
        return self._record(TransactionKind.CREDIT, amount, now,
                            _postings((contra, -amount), (wallet_account(self.account_id), amount)),
                            movements=(LotMovement.of(lot, amount),), source=source, reference=reference)

    def spend(self, *, amount: int, reason: SpendReason, reference: str, now: datetime) -> LedgerTransaction:
        """Take `amount` from the lots that expire first."""
        self.expire_due_lots(now)
        self._check_available(amount)
        movements = []
        for lot, take in self._allocate(amount):
            lot.remaining -= take
            self.changed_lots.add(lot.lot_id)
            movements.append(LotMovement.of(lot, take))
        return self._record(TransactionKind.SPEND, amount, now,
                            _postings((wallet_account(self.account_id), -amount), (REVENUE, amount)),
                            movements=tuple(movements), spend_reason=reason, reference=reference)

    def hold(self, *, hold_id: str, amount: int, reason: SpendReason, reference: str, ttl: timedelta,
             now: datetime) -> LedgerTransaction:
        """Reserve `amount` from the lots that expire first until the hold resolves."""
        self.expire_due_lots(now)
        self._check_available(amount)
        allocations = []
        for lot, take in self._allocate(amount):
            lot.remaining -= take
            lot.held += take
            self.changed_lots.add(lot.lot_id)
            allocations.append(LotMovement.of(lot, take))
        hold = Hold(hold_id, self.account_id, amount, reason, reference, HoldStatus.OPEN, now, now + ttl,
                    tuple(allocations))
        self.holds[hold_id] = hold
        self.new_holds.add(hold_id)
        return self._record(TransactionKind.HOLD, amount, now,
                            _postings((wallet_account(self.account_id), -amount), (HOLDS, amount)),
                            movements=hold.allocations, spend_reason=reason, reference=reference,
                            hold_id=hold_id)

    def capture(self, *, hold_id: str, amount: int, now: datetime) -> LedgerTransaction:
        """Spend `amount` of an open hold (from its allocations in order) and release the rest.

        A hold past its ttl is released as EXPIRED and the capture refused (see `_open_live_hold`).
        """
        hold = self._open_live_hold(hold_id, now)
        if amount > hold.amount:
            raise errors.CaptureExceedsHold(hold_id, amount, hold.amount)
        to_capture = amount
        captured = []
        for alloc in hold.allocations:
            lot = self.lots[alloc.lot_id]
            take = min(alloc.amount, to_capture)
            to_capture -= take
            lot.held -= alloc.amount
            lot.remaining += alloc.amount - take
            self.changed_lots.add(lot.lot_id)
            if take:
                captured.append(LotMovement.of(lot, take))
        hold.status, hold.captured, hold.resolved_at = HoldStatus.CAPTURED, amount, now
        self.changed_holds.add(hold_id)
        tx = self._record(TransactionKind.CAPTURE, amount, now,
                          _postings((HOLDS, -hold.amount), (REVENUE, amount),
                                    (wallet_account(self.account_id), hold.amount - amount)),
                          movements=tuple(captured), spend_reason=hold.reason, reference=hold.reference,
                          hold_id=hold_id)
        self.expire_due_lots(now)
        return tx

    def increase_hold(self, *, hold_id: str, new_amount: int, now: datetime) -> LedgerTransaction | None:
        """Grow an open hold to `new_amount`, the difference taken from the lots that expire first.

        Records a HOLD transaction for the difference (same hold_id); None, with nothing changed, when
        `new_amount` is what the hold holds already. A hold past its ttl is released as EXPIRED and the
        increase refused, like a capture or release (see `_open_live_hold`). Every other refusal (a smaller
        amount, not enough Connects) changes nothing.
        """
        hold = self._open_live_hold(hold_id, now)
        if new_amount < hold.amount:
            raise errors.HoldDecreaseNotAllowed(hold_id, new_amount, hold.amount)
        extra = new_amount - hold.amount
        if not extra:
            return None
        if extra > self.available_at(now):  # checked before the lazy expiry, so a refusal records nothing
            raise errors.InsufficientConnects(self.account_id, extra, self.available_at(now))
        self.expire_due_lots(now)
        taken = []
        for lot, take in self._allocate(extra):
            lot.remaining -= take
            lot.held += take
            self.changed_lots.add(lot.lot_id)
            taken.append(LotMovement.of(lot, take))
        hold.amount = new_amount
        hold.allocations = self._merged(hold.allocations, taken)
        self.changed_holds.add(hold_id)
        return self._record(TransactionKind.HOLD, extra, now,
                            _postings((wallet_account(self.account_id), -extra), (HOLDS, extra)),
                            movements=tuple(taken), spend_reason=hold.reason, reference=hold.reference,
                            hold_id=hold_id)

    def release(self, *, hold_id: str, now: datetime) -> LedgerTransaction:
        """Return all of an open hold to its lots.

        A hold past its ttl is released as EXPIRED and the release refused, exactly as a capture would be
        (see `_open_live_hold`): whichever call touches it first, a hold past its ttl resolves as EXPIRED.
        """
        hold = self._open_live_hold(hold_id, now)
        tx = self._release(hold, now, HoldStatus.RELEASED)
        self.expire_due_lots(now)
        return tx

    def expire_hold(self, *, hold_id: str, now: datetime) -> LedgerTransaction | None:
        """Release a hold past its ttl as EXPIRED; None if it is not open or not due (safe to repeat)."""
        hold = self.holds.get(hold_id)
        if hold is None or hold.status is not HoldStatus.OPEN or hold.expires_at > now:
            return None
        tx = self._release(hold, now, HoldStatus.EXPIRED)
        self.expire_due_lots(now)
        return tx

    def return_connects(self, *, original: Returnable, reason: ReturnReason,
                        now: datetime) -> LedgerTransaction:
        """The returned-Connects rule: new RETURN lots that keep the original lots' expiry."""
        tx = original.transaction
        if reason not in RETURNING_REASONS:
            raise errors.NotReturnable(reason.value)
        if tx.account_id != self.account_id:
            raise errors.TransactionNotFound(tx.transaction_id)
        if not is_returnable_kind(tx):
            raise errors.TransactionNotReturnable(
                tx.transaction_id, "is not a proposal or boost spend, nor a boost capture")
        if original.already_returned:
            raise errors.AlreadyReturned(tx.transaction_id)
        self.expire_due_lots(now)
        self._check_limit(tx.amount)
        # Movement i returns the original's movement i (listed as read back). The new lots' ids ascend in that
        # order, so that the RETURN, read back in listing order too (the same expiries, then lot id), keeps it.
        movements = []
        for moved, lot_id in zip(tx.movements, sorted(new_id() for _ in tx.movements), strict=True):
            lot = self._add_lot(LotSource.RETURN, moved.origin_source, moved.amount, now, moved.expires_at, lot_id)
            movements.append(LotMovement.of(lot, moved.amount))
        result = self._record(TransactionKind.RETURN, tx.amount, now,
                              _postings((REVENUE, -tx.amount), (wallet_account(self.account_id), tx.amount)),
                              movements=tuple(movements), return_reason=reason, reference=tx.reference,
                              returned_transaction_id=tx.transaction_id)
        # A returned lot whose original expiry has passed expires at once, through an entry.
        self.expire_due_lots(now)
        return result

    def reverse_credit(self, *, original: Returnable, now: datetime) -> tuple[LedgerTransaction | None, int]:
        """Take back what is left of a PURCHASE credit (a chargeback): the available Connects of its lot go back
        to sales. Answers the REVERSAL transaction (None when nothing was left to remove: nothing is recorded)
        and the credit's Connects not removed (spent, held or expired)."""
        tx = original.transaction
        if tx.account_id != self.account_id:
            raise errors.TransactionNotFound(tx.transaction_id)
        if tx.kind is not TransactionKind.CREDIT or tx.source is not LotSource.PURCHASE:
            raise errors.TransactionNotReversible(tx.transaction_id)
        if original.already_returned:
            raise errors.AlreadyReversed(tx.transaction_id)
        self.expire_due_lots(now)
        movements = []
        for moved in tx.movements:
            lot = self.lots.get(moved.lot_id)
            if lot is not None and lot.remaining:
                movements.append(LotMovement.of(lot, lot.remaining))
                lot.remaining = 0
                self.changed_lots.add(lot.lot_id)
        removed = sum(m.amount for m in movements)
        if not removed:
            return None, tx.amount
        result = self._record(TransactionKind.REVERSAL, removed, now,
                              _postings((wallet_account(self.account_id), -removed), (SALES, removed)),
                              movements=tuple(movements), source=LotSource.PURCHASE, reference=tx.reference,
                              returned_transaction_id=tx.transaction_id)
        return result, tx.amount - removed

    def expire_due_lots(self, now: datetime) -> LedgerTransaction | None:
        """Move the remaining Connects of lots past their date to breakage (one EXPIRE entry).

        Held Connects of such a lot stay reserved until their hold resolves; if
        they come back they are expired by the next call. Idempotent.
        """
        due = sorted((lot for lot in self.lots.values() if lot.remaining and lot.is_due(now)),
                     key=lambda x: x.order)
        if not due:
            return None
        movements = []
        for lot in due:
            movements.append(LotMovement.of(lot, lot.remaining))
            lot.expired += lot.remaining
            lot.remaining = 0
            self.changed_lots.add(lot.lot_id)
        total = sum(m.amount for m in movements)
        return self._record(TransactionKind.EXPIRE, total, now,
                            _postings((wallet_account(self.account_id), -total), (BREAKAGE, total)),
                            movements=tuple(movements))

    # ----- internals -----------------------------------------------------------------------

    def _check_available(self, amount: int) -> None:
        if amount > self.available:
            raise errors.InsufficientConnects(self.account_id, amount, self.available)

    def _check_limit(self, amount: int) -> None:
        if self.available + self.held + amount > MAX_CONNECTS:
            raise errors.BalanceLimitExceeded(self.account_id)

    def _allocate(self, amount: int) -> list[tuple[Lot, int]]:
        out = []
        for lot in sorted((x for x in self.lots.values() if x.remaining), key=lambda x: x.order):
            take = min(lot.remaining, amount)
            out.append((lot, take))
            amount -= take
            if not amount:
                return out
        raise AssertionError("allocate called without enough Connects")

    def _merged(self, allocations: Iterable[LotMovement], more: Iterable[LotMovement]) -> tuple[LotMovement, ...]:
        """A hold's allocations with `more` added: one per lot (a transaction moves a lot once), in spending
        order, so a capture takes from the lots that expire first."""
        by_lot: dict[str, int] = {}
        for a in (*allocations, *more):
            by_lot[a.lot_id] = by_lot.get(a.lot_id, 0) + a.amount
        ordered = sorted(by_lot, key=lambda lot_id: self.lots[lot_id].order)
        return tuple(LotMovement.of(self.lots[lot_id], by_lot[lot_id]) for lot_id in ordered)

    def _add_lot(self, source: LotSource, origin: LotSource, amount: int, now: datetime,
                 expires_at: datetime, lot_id: str | None = None) -> Lot:
        lot = Lot(lot_id or new_id(), self.account_id, source, origin, amount, amount, 0, now, expires_at)
        self.lots[lot.lot_id] = lot
        self.new_lots.add(lot.lot_id)
        return lot

    def _open_hold(self, hold_id: str) -> Hold:
        hold = self.holds.get(hold_id)
        if hold is None:
            raise errors.HoldNotFound(hold_id)
        if hold.status is not HoldStatus.OPEN:
            raise errors.HoldNotOpen(hold_id, hold.status.value)
        return hold

    def _open_live_hold(self, hold_id: str, now: datetime) -> Hold:
        """The open hold, or HoldExpired after releasing it as EXPIRED if its ttl has passed.

        The only refusal that changes state: the EXPIRED release is what the hold sweeper would record
        anyway, and recording it here means the hold resolves the same way whoever touches it first.
        """
        hold = self._open_hold(hold_id)
        if hold.expires_at <= now:
            self._release(hold, now, HoldStatus.EXPIRED)
            self.expire_due_lots(now)
            raise errors.HoldExpired(hold_id)
        return hold

    def _release(self, hold: Hold, now: datetime, status: HoldStatus) -> LedgerTransaction:
        for alloc in hold.allocations:
            lot = self.lots[alloc.lot_id]
            lot.held -= alloc.amount
            lot.remaining += alloc.amount
            self.changed_lots.add(lot.lot_id)
        hold.status, hold.resolved_at = status, now
        self.changed_holds.add(hold.hold_id)
        return self._record(TransactionKind.RELEASE, hold.amount, now,
                            _postings((HOLDS, -hold.amount), (wallet_account(self.account_id), hold.amount)),
                            movements=hold.allocations, spend_reason=hold.reason, reference=hold.reference,
                            hold_id=hold.hold_id)

    def _record(self, kind: TransactionKind, amount: int, now: datetime, postings: tuple[Posting, ...],
                **details: object) -> LedgerTransaction:
        movements: tuple[LotMovement, ...] = details.get("movements", ())  # type: ignore[assignment]
        if kind is not TransactionKind.RETURN and len(movements) > 1:
            # Listed as read back, so that a RETURN (built from the original as read back, movement by movement)
            # lists the return of the original's i-th movement i-th, in its event too: consumers pair them.
            details["movements"] = tuple(sorted(movements, key=lambda m: m.listing_order))
        self.sequence += 1
        tx = LedgerTransaction(new_id(), self.account_id, kind, amount, now, postings,
                               available_after=self.available, held_after=self.held, sequence=self.sequence,
                               **details)  # type: ignore[arg-type]
        self.pending.append(tx)
        return tx

    def take_pending(self) -> list[LedgerTransaction]:
        out, self.pending = self.pending, []
        return out

    def clear_changes(self) -> None:
        self.pending.clear()
        for s in (self.new_lots, self.changed_lots, self.new_holds, self.changed_holds):
            s.clear()


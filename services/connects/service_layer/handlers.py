"""Use cases: apply a batch of commands in one unit of work (group commit).

Each command gets its own outcome (a receipt, a replayed receipt or a
DomainError); the batch is committed once. Idempotency, authorisation and
the order of locking live here, the rules of money in the domain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.connects.domain import commands as c
from services.connects.domain import errors
from services.connects.domain.model import (
    AD_REASONS,
    LedgerTransaction,
    LotSource,
    Returnable,
    SpendReason,
    Wallet,
    new_id,
)
from services.connects.service_layer import receipts
from services.connects.service_layer.receipts import Receipt
from services.connects.service_layer.unit_of_work import AbstractLedgerUnitOfWork, StoredRequest
from services.kit.errors import DomainError, PermissionDenied

BILLING = "billing"
ADS = "ads"
SYSTEM = "connects"  # the service itself: sweepers and the jobs consumer


class Metrics(Protocol):
    """What the ledger reports (implemented with prometheus_client in adapters.metrics)."""

    def transaction_recorded(self, tx: LedgerTransaction) -> None: ...

    def replayed(self, method: str) -> None: ...

    def refused(self, method: str, error: DomainError) -> None: ...

    def batch_committed(self, size: int) -> None: ...

    def job_return(self, result: str) -> None:
        """One transaction of a cancelled or removed job: returned, replayed, nothing_to_return or a refusal."""


class NullMetrics:
    def transaction_recorded(self, tx: LedgerTransaction) -> None:
        pass

    def replayed(self, method: str) -> None:
        pass

    def refused(self, method: str, error: DomainError) -> None:
        pass

    def batch_committed(self, size: int) -> None:
        pass

    def job_return(self, result: str) -> None:
        pass


Mutation = (c.Credit | c.Spend | c.PlaceHold | c.IncreaseHold | c.CaptureHold | c.ReleaseHold | c.ReturnConnects
            | c.ReverseCredit)
Scheduled = c.ExpireLots | c.ExpireHold
AnyCommand = Mutation | Scheduled


@dataclass(frozen=True)
class Envelope:
    """A command and who sent it (captured in the RPC's context before crossing threads)."""

    command: AnyCommand
    caller: str


@dataclass(frozen=True)
class Outcome:
    receipt: Receipt | None = None
    error: DomainError | None = None
    replayed: bool = False


def _deny(caller: str, what: str) -> PermissionDenied:
    return PermissionDenied("CALLER_NOT_ALLOWED", f"caller {caller!r} may not {what}", caller=caller)


# Who may ask for returned Connects: the marketplace (it decides a job was cancelled or removed) and support
# operators. Ads and billing may not; the service itself returns through the jobs consumer.
RETURN_CALLERS = frozenset({"marketplace", "operator"})


def authorize(cmd: AnyCommand, caller: str, hold_reason: SpendReason | None = None) -> None:
    """Who may do what. Only billing credits PURCHASE; only ads moves Connects for ad products (BOOST, BADGE,
    PROMOTED_PROFILE); only RETURN_CALLERS return Connects; only the service itself runs the sweeps.

    IncreaseHold, CaptureHold and ReleaseHold are judged by the reason of their hold (`hold_reason`): the hold's
    row for a new command, the stored answer's reason for a replay. Every other rule needs only the command.
    """
    if caller == SYSTEM:
        return
    if isinstance(cmd, c.ExpireLots | c.ExpireHold):
        raise _deny(caller, f"run {cmd.method} (the service's own sweeps)")
    if isinstance(cmd, c.Credit) and cmd.source is LotSource.PURCHASE and caller != BILLING:
        raise _deny(caller, "credit PURCHASE Connects (billing only)")
    if isinstance(cmd, c.ReverseCredit) and caller != BILLING:
        raise _deny(caller, "reverse a PURCHASE credit (billing only)")
    if isinstance(cmd, c.ReturnConnects) and caller not in RETURN_CALLERS:
        raise _deny(caller, f"return Connects ({', '.join(sorted(RETURN_CALLERS))} only)")
    reason = cmd.reason if isinstance(cmd, c.Spend | c.PlaceHold) else hold_reason
    if reason in AD_REASONS and caller != ADS:
        raise _deny(caller, f"{cmd.method} for {reason.value} (ads only)")


def _needs_hold(cmd: AnyCommand) -> bool:
    return isinstance(cmd, c.IncreaseHold | c.CaptureHold | c.ReleaseHold)


def _hold_reason(receipt: Receipt) -> SpendReason | None:
    """The reason of the hold a stored IncreaseHold, CaptureHold or ReleaseHold answer is about."""
    if receipt.hold_reason is not None:
        return receipt.hold_reason
    return receipt.recorded.spend_reason


def precheck(cmd: AnyCommand, caller: str) -> None:
    """Checks that need no database: run before queuing, so refusals cost nothing."""
    if not _needs_hold(cmd):
        authorize(cmd, caller)


def execute(uow: AbstractLedgerUnitOfWork, batch: Sequence[Envelope], now: datetime,
            metrics: Metrics | None = None) -> list[Outcome]:
    """Apply `batch` in one unit of work and commit. Raises only for infrastructure failures
    (including RequestIdConflict): the caller then retries, the batch or command by command."""
    metrics = metrics or NullMetrics()
    outcomes: list[Outcome | None] = [None] * len(batch)
    todo = []
    for i, env in enumerate(batch):
        # Refused before anything is read, replayed or locked (also when `precheck` was not called).
        try:
            precheck(env.command, env.caller)
        except DomainError as exc:
            metrics.refused(env.command.method, exc)
            outcomes[i] = Outcome(error=exc)
            continue
        todo.append((i, env))
    with uow:
        if todo and all(isinstance(e.command, c.Credit | c.Spend | c.PlaceHold) for _, e in todo):
            # Their accounts are known before anything is read (no hold or transaction to look up first).
            uow.expect_wallets({e.command.account_id for _, e in todo})  # type: ignore[union-attr]
        todo = _answer_known_requests(uow, todo, outcomes, metrics)
        hold_ids = {e.command.hold_id for _, e in todo
                    if isinstance(e.command, c.IncreaseHold | c.CaptureHold | c.ReleaseHold | c.ExpireHold)}
        tx_ids = {_transaction_of(e.command) for _, e in todo if isinstance(e.command, c.ReturnConnects
                                                                              | c.ReverseCredit)}
        hold_accounts = uow.hold_accounts(hold_ids) if hold_ids else {}
        tx_accounts = uow.transaction_accounts(tx_ids) if tx_ids else {}
        accounts = {a for a in (_account_of(e.command, hold_accounts, tx_accounts) for _, e in todo) if a}
        # Spends and holds cannot succeed on an account without a wallet (and are refused without creating
        # one): only credits create wallets. Captures, releases and returns name existing ones.
        only_debited = {e.command.account_id for _, e in todo if isinstance(e.command, c.Spend | c.PlaceHold)}
        only_debited -= {e.command.account_id for _, e in todo if isinstance(e.command, c.Credit)}
        only_debited -= set(hold_accounts.values()) | set(tx_accounts.values())
        wallets = uow.lock_wallets(sorted(accounts), hold_ids, must_exist=only_debited) if accounts else {}
        no_wallet = only_debited - wallets.keys()
        returnables = uow.returnables(tx_ids) if tx_ids else {}
        stored: list[StoredRequest] = []
        for i, env in todo:
            cmd = env.command
            applying = Applying(env.caller, returnables, now)
            try:
                account = _account_of(cmd, hold_accounts, tx_accounts)
                if account is None:
                    raise _not_found(cmd)
                if account in no_wallet:
                    raise errors.InsufficientConnects(account, cmd.amount, 0)  # type: ignore[union-attr]
                receipt = APPLIERS[type(cmd)](wallets[account], cmd, applying)
            except DomainError as exc:
                metrics.refused(cmd.method, exc)
                outcomes[i] = Outcome(error=exc)
                continue
            outcomes[i] = Outcome(receipt=receipt)
            if receipt is not None and isinstance(cmd, c.Command):
                stored.append(StoredRequest(cmd.request_id, cmd.method, cmd.fingerprint(),
                                            receipts.encode(receipt)))
        changed = [w for w in wallets.values() if w.pending]
        recorded = [tx for w in changed for tx in w.pending]
        uow.save(changed, stored, now)
        uow.commit()
    for tx in recorded:
        metrics.transaction_recorded(tx)
    metrics.batch_committed(len(batch))
    return [o or Outcome() for o in outcomes]


def _answer_known_requests(uow: AbstractLedgerUnitOfWork, batch: Sequence[tuple[int, Envelope]],
                           outcomes: list[Outcome | None], metrics: Metrics) -> list[tuple[int, Envelope]]:
    """Replay or refuse commands whose request_id was already applied; return the rest in order.

    A replay is authorised like a new command: the stored answer goes only to a caller who could have made
    the request (for a capture or release, judged by its hold's reason, kept in the stored transaction).
    """
    ids = [e.command.request_id for _, e in batch if isinstance(e.command, c.Command)]
    known = uow.find_requests(ids) if ids else {}
    todo = []
    seen: set[str] = set()
    for i, env in batch:
        cmd = env.command
        if isinstance(cmd, c.Command):
            if cmd.request_id in seen:
                raise AssertionError("a batch must not carry the same request_id twice")
            seen.add(cmd.request_id)
            prior = known.get(cmd.request_id)
            if prior is not None:
                if prior.method != cmd.method or prior.fingerprint != cmd.fingerprint():
                    outcomes[i] = Outcome(error=errors.RequestIdReused(cmd.request_id, cmd.method))
                else:
                    receipt = receipts.decode(prior.response)
                    try:
                        authorize(cmd, env.caller, _hold_reason(receipt) if _needs_hold(cmd) else None)
                    except DomainError as exc:
                        metrics.refused(cmd.method, exc)
                        outcomes[i] = Outcome(error=exc)
                        continue
                    metrics.replayed(cmd.method)
                    outcomes[i] = Outcome(receipt=receipt, replayed=True)
                continue
        todo.append((i, env))
    return todo


def _transaction_of(cmd: c.ReturnConnects | c.ReverseCredit) -> str:
    return cmd.spend_transaction_id if isinstance(cmd, c.ReturnConnects) else cmd.credit_transaction_id


def _account_of(cmd: AnyCommand, hold_accounts: dict[str, str], tx_accounts: dict[str, str]) -> str | None:
    if isinstance(cmd, c.IncreaseHold | c.CaptureHold | c.ReleaseHold | c.ExpireHold):
        return hold_accounts.get(cmd.hold_id)
    if isinstance(cmd, c.ReturnConnects | c.ReverseCredit):
        return tx_accounts.get(_transaction_of(cmd))
    return cmd.account_id


def _not_found(cmd: AnyCommand) -> DomainError:
    if isinstance(cmd, c.ReturnConnects | c.ReverseCredit):
        return errors.TransactionNotFound(_transaction_of(cmd))
    return errors.HoldNotFound(cmd.hold_id)  # type: ignore[union-attr]


@dataclass
class Applying:
    """What a batch read for its commands, shared by the appliers (returns mark what they returned)."""

    caller: str
    returnables: dict[str, Returnable]
    now: datetime


def _credit(wallet: Wallet, cmd: c.Credit, ctx: Applying) -> Receipt:
    return Receipt(wallet.credit(amount=cmd.amount, source=cmd.source, reference=cmd.reference, now=ctx.now))


def _spend(wallet: Wallet, cmd: c.Spend, ctx: Applying) -> Receipt:
    return Receipt(wallet.spend(amount=cmd.amount, reason=cmd.reason, reference=cmd.reference, now=ctx.now))


def _place_hold(wallet: Wallet, cmd: c.PlaceHold, ctx: Applying) -> Receipt:
    hold_id = new_id()
    tx = wallet.hold(hold_id=hold_id, amount=cmd.amount, reason=cmd.reason, reference=cmd.reference,
                     ttl=cmd.ttl, now=ctx.now)
    return Receipt(tx, hold_id, wallet.holds[hold_id].expires_at)


def _increase_hold(wallet: Wallet, cmd: c.IncreaseHold, ctx: Applying) -> Receipt:
    hold = wallet.holds[cmd.hold_id]
    authorize(cmd, ctx.caller, hold.reason)
    tx = wallet.increase_hold(hold_id=cmd.hold_id, new_amount=cmd.new_amount, now=ctx.now)
    return Receipt(tx, cmd.hold_id, hold.expires_at, hold.amount, hold.reason)


def _capture_hold(wallet: Wallet, cmd: c.CaptureHold, ctx: Applying) -> Receipt:
    authorize(cmd, ctx.caller, wallet.holds[cmd.hold_id].reason)
    return Receipt(wallet.capture(hold_id=cmd.hold_id, amount=cmd.amount, now=ctx.now))


def _release_hold(wallet: Wallet, cmd: c.ReleaseHold, ctx: Applying) -> Receipt:
    authorize(cmd, ctx.caller, wallet.holds[cmd.hold_id].reason)
    return Receipt(wallet.release(hold_id=cmd.hold_id, now=ctx.now))


def _return_connects(wallet: Wallet, cmd: c.ReturnConnects, ctx: Applying) -> Receipt:
    original = ctx.returnables[cmd.spend_transaction_id]
    tx = wallet.return_connects(original=original, reason=cmd.reason, now=ctx.now)
    ctx.returnables[cmd.spend_transaction_id] = Returnable(original.transaction, True)
    return Receipt(tx)


def _reverse_credit(wallet: Wallet, cmd: c.ReverseCredit, ctx: Applying) -> Receipt:
    original = ctx.returnables[cmd.credit_transaction_id]
    reversal, not_removed = wallet.reverse_credit(original=original, now=ctx.now)
    if reversal is not None:  # reversed: a second request for the same credit is ALREADY_REVERSED
        ctx.returnables[cmd.credit_transaction_id] = Returnable(original.transaction, True)
    return Receipt(reversal, already_spent=not_removed)


def _expire_lots(wallet: Wallet, cmd: c.ExpireLots, ctx: Applying) -> Receipt | None:
    tx = wallet.expire_due_lots(ctx.now)
    return Receipt(tx) if tx else None


def _expire_hold(wallet: Wallet, cmd: c.ExpireHold, ctx: Applying) -> Receipt | None:
    tx = wallet.expire_hold(hold_id=cmd.hold_id, now=ctx.now)
    return Receipt(tx) if tx else None


Applier = Callable[[Wallet, Any, Applying], Receipt | None]

# Command type -> the function that applies it to its (locked) wallet. Every command has one entry.
APPLIERS: dict[type, Applier] = {
    c.Credit: _credit,
    c.Spend: _spend,
    c.PlaceHold: _place_hold,
    c.IncreaseHold: _increase_hold,
    c.CaptureHold: _capture_hold,
    c.ReleaseHold: _release_hold,
    c.ReturnConnects: _return_connects,
    c.ReverseCredit: _reverse_credit,
    c.ExpireLots: _expire_lots,
    c.ExpireHold: _expire_hold,
}

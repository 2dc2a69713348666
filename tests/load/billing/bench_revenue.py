"""The books: the revenue consumer catching up on 100,000 ledger events, and Reconcile over 100,000 accounts.

Run by `make bench` (tests/load/run_all.py) or directly:
    set -a; source .local/env; set +a; .venv/bin/python tests/load/billing/bench_revenue.py

0. Baseline: a bare kafka-python consumer fetches the same topic (nothing done with the records) before, between
   and after the consumer's two runs; the median is reported beside them.
1. Backlog: BENCH_REVENUE_ACCOUNTS (10,000) accounts x 10 ledger events = 100,000 LedgerTransactionRecorded
   (purchase credits, plan grants, spends from mixed lots, a hold captured in part, badge and promoted
   spends, a return, an expiry of partially spent lots) are produced to a fresh topic (3 partitions,
   keyed by account) before the consumer starts. Timed: from the consumer's first poll to the books
   holding every transaction. Target >= 10,000 events/s.
   Then the same backlog into fresh books by BENCH_REVENUE_MEMBERS (3) consumer processes in one group, as
   that many billing replicas would run it (each its own interpreter; one per partition): the scale-out
   figure, with each event applied once and the report to the cent.
2. Exactly once: a second consumer group replays the whole topic; nothing may change (row counts,
   deferred revenue, outbox), and the report must equal the workload's known totals to the cent.
3. Reconcile: purchases, PURCHASE credits and provider payments of 100,000 accounts (the books' rows
   written through the same batch use case, without Kafka); one Reconcile run is timed. The ledger side
   (GetLedgerTotals) is an in-memory answer here: the figure is billing's own cost (its reads, the
   three-way comparison, recording the run).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import sqlalchemy as sa
from adsmon.connects.v1 import connects_pb2 as pb
from sqlalchemy.engine import make_url

from services.billing.adapters.lookup import SqlAlchemyPurchaseLookup
from services.billing.adapters.revenue_events import ledger_tx
from services.billing.adapters.revenue_repository import BooksRepository
from services.billing.adapters.revenue_tables import revenue_entries, revenue_lots, revenue_transactions
from services.billing.adapters.tables import purchases
from services.billing.adapters.topics import CONNECTS_LEDGER as LEDGER_TOPIC
from services.billing.entrypoints.revenue_consumer import MAX_POLL_RECORDS, RevenueConsumer
from services.billing.service_layer import reports
from services.billing.service_layer.reconcile import Reconciler
from services.billing.service_layer.revenue import LedgerItem, apply_ledger_batch
from services.kit import bulk
from services.kit.config import ServiceConfig
from services.kit.db import make_engine
from services.kit.kafka import dlq_topic, encode_event, ensure_topics, make_consumer, make_event, make_producer
from services.kit.outbox import OUTBOX
from tests.support.scratch_db import drop_database
from tests.unit.billing.revenue_fakes import FakeLedgerTotals, FakeProvider, Ledger, migrate_books

ACCOUNTS = int(os.environ.get("BENCH_REVENUE_ACCOUNTS", "10000"))
RECONCILE_ACCOUNTS = int(os.environ.get("BENCH_RECONCILE_ACCOUNTS", "100000"))
TARGET_EPS = 10_000
# 0: the consumer polls, decodes and applies one batch after the other (the comparison for the pipelined loop).
PIPELINE = os.environ.get("BENCH_REVENUE_PIPELINE", "1") != "0"
# Members of the consumer group in the scale-out pass (billing replicas, one process each; the topic has 3
# partitions, so more than 3 would sit idle). 0 or 1: no such pass.
MEMBERS = int(os.environ.get("BENCH_REVENUE_MEMBERS", "3"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)
P, G = pb.LOT_SOURCE_PURCHASE, pb.LOT_SOURCE_PLAN_GRANT
# What one account's ten events recognise (USD cents): see account_events.
PER_ACCOUNT = {"cash": 900, "boosts": 45, "badge": 15, "promoted": 60, "proposals": 0, "breakage": 480,
               "deferred": 300}


def drop_db(url: str) -> None:
    admin = sa.create_engine(make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        drop_database(conn, str(make_url(url).database))
    admin.dispose()


def scratch_db() -> str:
    admin = sa.create_engine(make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]), isolation_level="AUTOCOMMIT")
    name = f"bench_books_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return make_url(os.environ["ADSMON_ADMIN_DATABASE_URL"]).set(database=name).render_as_string(hide_password=False)


def purchase_rows(pids: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
    return [{"purchase_id": pid, "request_id": f"req-{pid}", "fingerprint": "f", "account_id": acct,
             "bundle_id": f"connects-{n}", "connects": n, "amount_cents": 15 * n, "currency": "USD",
             "payment_method": "tok", "state": "COMPLETED", "payment_status": "CAPTURED",
             "payment_reference": f"pay-{pid}", "credit_request_id": f"billing:purchase:{pid}:credit",
             "credit_transaction_id": f"credit-{pid}", "failure_reason": "", "created_at": T0, "finished_at": T0,
             "updated_at": T0, "attempts": 0} for pid, acct, n in pids]


def account_events(ledger: Ledger, i: int) -> tuple[list[Any], list[tuple[str, str, int]]]:
    """Ten ledger transactions of one account, every kind the books handle."""
    a = f"acct-{i}"
    p1, p2 = f"p{i}a", f"p{i}b"
    lot1, lotg, lotr1, lotr2, lot2 = (f"{a}-{x}" for x in ("P1", "G1", "R1", "R2", "P2"))
    at = [T0 + timedelta(hours=h) for h in range(10)]
    s1 = f"{a}-s1"
    events = [
        ledger.credit(a, 40, lot=lot1, purchase_id=p1, at=at[0]),                          # cash 600
        ledger.credit(a, 10, lot=lotg, source=G, at=at[1]),
        ledger.spend(a, [(lotg, G, 10), (lot1, P, 2)], at=at[2], tx_id=s1),                # proposals 30
        ledger._msg(a, pb.TRANSACTION_KIND_HOLD, 5, -5, at[3], [(lot1, P, 5)], spend_reason=pb.SPEND_REASON_BOOST),
        ledger.spend(a, [(lot1, P, 3)], reason=pb.SPEND_REASON_BOOST, kind=pb.TRANSACTION_KIND_CAPTURE,
                     at=at[4]),                                                            # boosts 45
        ledger.spend(a, [(lot1, P, 1)], reason=pb.SPEND_REASON_BADGE, at=at[5]),           # badge 15
        ledger.give_back(a, s1, [(lotr1, G, 10), (lotr2, P, 2)], at=at[6]),                # proposals -30
        ledger.spend(a, [(lot1, P, 4)], reason=pb.SPEND_REASON_PROMOTED_PROFILE, at=at[7]),  # promoted 60
        ledger.credit(a, 20, lot=lot2, purchase_id=p2, at=at[8]),                          # cash 300
        ledger.expire(a, [(lot1, P, 30), (lotr2, P, 2), (lotr1, G, 10)], at=at[9]),         # breakage 480
    ]
    return events, [(p1, a, 40), (p2, a, 20)]


def produce(topic: str, bootstrap: str, events: list[Any]) -> None:
    producer = make_producer(bootstrap, client_id="bench-revenue", linger_ms=20, batch_size=512 * 1024,
                             compression_type=None, max_request_size=8 * 1024 * 1024)
    for msg in events:
        event = make_event(msg, msg.account_id, "connects", occurred_at=msg.occurred_at.ToDatetime(tzinfo=UTC))
        producer.send(topic, key=msg.account_id.encode(), value=encode_event(event))
    producer.flush()
    producer.close()


class TimedConsumer(RevenueConsumer):
    """Notes when the first poll started, and how many records it has resolved."""

    first_poll: float | None = None
    first_records: float | None = None  # after the group join and the first fetch
    seen = 0

    def poll_once(self) -> int:
        if self.first_poll is None:
            self.first_poll = time.perf_counter()
        count = super().poll_once()
        if count and self.first_records is None:
            self.first_records = time.perf_counter()
        self.seen += count
        return count


def bare_fetch(bootstrap: str, topic: str, records: int, timeout: float = 300) -> float:
    """The baseline: a bare kafka-python consumer (new group, the revenue consumer's fetch settings) reading the
    same topic and doing nothing with the records; seconds from its first records to `records` fetched."""
    consumer = make_consumer(bootstrap, group_id=f"bench-bare-{uuid.uuid4().hex[:8]}", client_id="bench-bare",
                             max_poll_records=MAX_POLL_RECORDS, fetch_max_bytes=64 * 1024 * 1024,
                             max_partition_fetch_bytes=16 * 1024 * 1024)
    try:
        while not consumer.partitions_for_topic(topic):
            time.sleep(0.1)
        consumer.subscribe([topic])
        seen, first = 0, None
        deadline = time.monotonic() + timeout
        while seen < records and time.monotonic() < deadline:
            got = consumer.poll(timeout_ms=200)
            if got and first is None:
                first = time.perf_counter()
            seen += sum(len(rs) for rs in got.values())
        if seen < records:
            raise RuntimeError(f"bare consumer stuck at {seen} of {records} records")
        return time.perf_counter() - (first or time.perf_counter())
    finally:
        consumer.close(autocommit=False)


def figures(engine: sa.Engine) -> dict[str, int]:
    """The revenue report's totals over the workload's whole period."""
    report = reports.revenue_report(engine, SqlAlchemyPurchaseLookup(engine), T0 - timedelta(days=1),
                                    T0 + timedelta(days=2))
    by = {p.value.lower(): v for p, (_, v) in report.recognised.items()}
    return {"cash": report.cash_received, "boosts": by.get("boosts", 0), "badge": by.get("badge", 0),
            "promoted": by.get("promoted_profiles", 0), "proposals": by.get("proposals", 0),
            "breakage": report.breakage, "deferred": report.deferred_closing}


def state(engine: sa.Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        counts = tuple(int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                       for t in (revenue_transactions, revenue_lots, revenue_entries, OUTBOX))
        return counts + BooksRepository(conn).deferred()


def catch_up(engine: sa.Engine, bootstrap: str, prefix: str, records: int,
             timeout: float = 900) -> tuple[TimedConsumer, float, float]:
    """A new consumer group reads the topic from the start; seconds from its first poll (and from its first
    records, i.e. without the group join) to `records` resolved."""
    consumer = TimedConsumer(engine, bootstrap, f"bench-{uuid.uuid4().hex[:8]}", [LEDGER_TOPIC], service="bench",
                             topic_prefix=prefix, poll_timeout_ms=200, pipeline=PIPELINE)
    consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if consumer.seen >= records:
                now = time.perf_counter()
                return consumer, now - (consumer.first_poll or now), now - (consumer.first_records or now)
            time.sleep(0.01)
        raise RuntimeError(f"consumer stuck at {consumer.seen} of {records} records")
    finally:
        consumer.stop()


def _member(index: int, url: str, bootstrap: str, prefix: str, group: str, switch_ms: float,
            progress: Any, first_polls: Any, stop: Any) -> None:
    """One member of the scale-out group, in its own process (its own GIL), as a billing replica runs it."""
    sys.setswitchinterval(switch_ms / 1000.0)
    engine = make_engine(url, pool_size=2)
    consumer = TimedConsumer(engine, bootstrap, group, [LEDGER_TOPIC], service="bench", topic_prefix=prefix,
                             poll_timeout_ms=200, pipeline=PIPELINE)
    consumer.start()
    try:
        while not stop.wait(0.01):
            progress[2 * index], progress[2 * index + 1] = consumer.resolved_total, consumer.applied_total
            if consumer.first_poll is not None and not first_polls[index]:
                first_polls[index] = time.time() - (time.perf_counter() - consumer.first_poll)
    finally:
        consumer.stop()
        progress[2 * index], progress[2 * index + 1] = consumer.resolved_total, consumer.applied_total
        engine.dispose()


def catch_up_group(url: str, bootstrap: str, prefix: str, records: int, members: int, switch_ms: float,
                   timeout: float = 900) -> tuple[float, int]:
    """`members` consumer processes in one new group read the topic; seconds from the first member's first
    poll to `records` resolved by them together, and how many they applied."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    progress, first_polls, stop = ctx.Array("q", 2 * members), ctx.Array("d", members), ctx.Event()
    group = f"bench-group-{uuid.uuid4().hex[:8]}"
    procs = [ctx.Process(target=_member, args=(i, url, bootstrap, prefix, group, switch_ms, progress,
                                               first_polls, stop), daemon=True) for i in range(members)]
    for proc in procs:
        proc.start()
    elapsed = None
    try:
        deadline = time.monotonic() + timeout
        while elapsed is None and time.monotonic() < deadline:
            if sum(progress[0::2]) >= records:
                elapsed = time.time() - min(t for t in first_polls[:] if t)
            elif not all(proc.is_alive() for proc in procs):
                raise RuntimeError("a consumer group member died")
            else:
                time.sleep(0.01)
    finally:
        stop.set()
        for proc in procs:
            proc.join(30)
    if elapsed is None:
        raise RuntimeError(f"consumer group stuck at {sum(progress[0::2])} of {records} records")
    return elapsed, sum(progress[1::2])


def insert_purchases(engine: sa.Engine, rows: list[tuple[str, str, int]]) -> None:
    """The backlog's purchases (billing's side of each PURCHASE credit), 10,000 rows per transaction."""
    for k in range(0, len(rows), 10_000):
        with engine.begin() as conn:
            bulk.pg_insert_rows(conn, purchases, purchase_rows(rows[k:k + 10_000]))


def books_db(rows: list[tuple[str, str, int]]) -> tuple[str, sa.Engine]:
    """A fresh scratch database with the books' schema and the backlog's purchases."""
    url = scratch_db()
    engine = make_engine(url, pool_size=4)
    migrate_books(engine)
    insert_purchases(engine, rows)
    return url, engine


def reconcile_setup(engine: sa.Engine, start: int, count: int, totals: FakeLedgerTotals,
                    provider: FakeProvider) -> None:
    """`count` more accounts with one completed purchase, its credit and its payment."""
    ledger = Ledger()
    chunk = 5000
    for base in range(start, start + count, chunk):
        msgs, rows = [], []
        for i in range(base, min(base + chunk, start + count)):
            pid, acct = f"rp{i}", f"racct-{i}"
            msg = ledger.credit(acct, 40, lot=f"{acct}-L", purchase_id=pid, at=T0)
            msgs.append(msg)
            rows.append((pid, acct, 40))
            provider.pay(pid, 600, T0)
        with engine.begin() as conn:
            bulk.pg_insert_rows(conn, purchases, purchase_rows(rows))
            apply_ledger_batch(conn, [LedgerItem(uuid.uuid4().hex, "bench", 0, 0, ledger_tx(m)) for m in msgs],
                               group="bench-reconcile")
        totals.events.extend(msgs)


def main() -> int:
    url = scratch_db()
    try:
        return run(url)
    finally:
        drop_db(url)


def run(url: str) -> int:
    # The switch interval billing's processes run with (kit tune_process): the consumer's applier thread then
    # gets the GIL back soon after each database answer instead of up to 5 ms later.
    switch_ms = float(os.environ.get("ADSMON_GIL_SWITCH_INTERVAL_MS", ServiceConfig.gil_switch_interval_ms))
    sys.setswitchinterval(switch_ms / 1000.0)
    bootstrap = os.environ["ADSMON_KAFKA_BOOTSTRAP"]
    engine = make_engine(url, pool_size=4)
    migrate_books(engine)
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    topic = prefix + LEDGER_TOPIC
    ensure_topics(bootstrap, {topic: 3, dlq_topic(topic): 1})

    ledger = Ledger()
    events: list[Any] = []
    rows: list[tuple[str, str, int]] = []
    for i in range(ACCOUNTS):
        evs, ps = account_events(ledger, i)
        events.extend(evs)
        rows.extend(ps)
    insert_purchases(engine, rows)
    t = time.perf_counter()
    produce(topic, bootstrap, events)
    produce_s = time.perf_counter() - t
    n = len(events)

    # The bare fetch baseline interleaved with the consumer's runs (before, between, after).
    bare = [bare_fetch(bootstrap, topic, n)]
    consumer, first_s, first_data_s = catch_up(engine, bootstrap, prefix, n)
    after_first = state(engine)
    bare.append(bare_fetch(bootstrap, topic, n))
    replay, replay_s, _ = catch_up(engine, bootstrap, prefix, n)
    after_replay = state(engine)
    bare.append(bare_fetch(bootstrap, topic, n))
    bare_s = statistics.median(bare)

    got = figures(engine)
    want = {k: v * ACCOUNTS for k, v in PER_ACCOUNT.items()}
    exact = got == want and replay.applied_total == 0 and after_first == after_replay and consumer.applied_total == n

    # Scale-out: MEMBERS processes in one group (billing replicas) catch up on the same topic into fresh books.
    group_line = ""
    if MEMBERS > 1:
        url2, engine2 = books_db(rows)
        try:
            group_s, group_applied = catch_up_group(url2, bootstrap, prefix, n, MEMBERS, switch_ms)
            group_exact = group_applied == n and figures(engine2) == want
        finally:
            engine2.dispose()
            drop_db(url2)
        exact = exact and group_exact
        group_line = (f"| the same backlog, {MEMBERS} consumer processes in one group (billing replicas; 3 partitions),"
                      f" first poll to caught up | {group_s:.2f} s = **{n / group_s:,.0f} events/s** | >= "
                      f"{TARGET_EPS:,} events/s {'(met)' if n / group_s >= TARGET_EPS else '(NOT met)'}; each "
                      f"event applied once, report to the cent: {'yes' if group_exact else 'NO'} |")

    totals, provider = FakeLedgerTotals(), FakeProvider()
    # The backlog's accounts are reconciled too; their ledger side is what they were given.
    totals.events.extend(events)
    for pid, _, c in rows:
        provider.pay(pid, 15 * c, T0)
    reconcile_setup(engine, 0, max(0, RECONCILE_ACCOUNTS - ACCOUNTS), totals, provider)
    reconciler = Reconciler(engine, totals, SqlAlchemyPurchaseLookup(engine), provider,
                            clock=lambda: T0 + timedelta(days=30))
    t = time.perf_counter()
    outcome = reconciler.run("bench")
    reconcile_s = time.perf_counter() - t

    eps = n / first_s
    lines = [
        "## Billing books: revenue consumer backlog and Reconcile", "",
        "| measure | value | target |", "|---|---|---|",
        f"| backlog of {n:,} ledger events ({ACCOUNTS:,} accounts, {'pipelined' if PIPELINE else 'not pipelined'}),"
        f" first poll to caught up | {first_s:.2f} s "
        f"= **{eps:,.0f} events/s** | >= {TARGET_EPS:,} events/s {'(met)' if eps >= TARGET_EPS else '(NOT met)'} |",
        f"| the same without the consumer group join (first records to caught up) | {first_data_s:.2f} s "
        f"= {n / first_data_s:,.0f} events/s | |",
        *([group_line] if group_line else []),
        f"| baseline: bare kafka-python consumer fetching the same topic (median of {len(bare)}, interleaved: "
        f"{', '.join(f'{x:.2f}' for x in bare)} s) | {bare_s:.2f} s = {n / bare_s:,.0f} records/s | the consumer "
        f"(first records to caught up) takes {first_data_s / bare_s:.1f}x its time |",
        f"| replay of the whole topic by a second group (all duplicates) | {replay_s:.2f} s "
        f"= {n / replay_s:,.0f} events/s | changes nothing: {'yes' if after_first == after_replay else 'NO'} |",
        f"| report after both passes equals the workload to the cent | {'yes' if got == want else 'NO'} | exact |",
        f"| Reconcile over {outcome.accounts_checked:,} accounts ({len(outcome.mismatches)} mismatches) | "
        f"{reconcile_s:.2f} s | report |",
        "", f"(producing the backlog took {produce_s:.1f} s, not timed; ledger totals in memory for Reconcile)", ""]
    print("\n".join(lines))
    engine.dispose()
    ok = exact and not outcome.mismatches
    if not ok:
        print(f"FAILED: report {got} != {want}, mismatches={len(outcome.mismatches)}, after the first pass "
              f"{after_first}, after the replay {after_replay}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The consistency checker: after any run, do the ledger, the outboxes, Kafka, ads, billing and billing's
reconciliation agree? `python -m tests.chaos.check` (settings from the environment, as `make run`/`make demo`).

    set -a; source .local/env; set +a; .venv/bin/python -m tests.chaos.check --settle 60

What it compares (each failed comparison is one discrepancy; figures are printed either way):
- ledger (connects): postings sum to zero overall and per transaction; each wallet equals its lots and its
  wallet postings; held Connects = open holds = the system:holds account; each hold resolved at most once,
  and every resolved hold by exactly one capture or release.
- outboxes (all three): every row relayed (none left unpublished once settled), and every relayed event_id
  is on its Kafka topic (duplicates from a relay crash are counted, not a discrepancy: consumers dedup).
- consumers: every consumer group of this prefix has consumed its topics to the end (lag 0); the events
  consumed are the processed-events rows; dead letters are counted.
- billing: each completed (or charged back) purchase credited exactly once in the ledger, with its amount,
  each failed purchase never credited, none left pending; billing's Reconcile RPC reports no mismatch.
- ads: no settlement step left pending; each settled step's hold is resolved in the ledger (capture ->
  CAPTURED, release -> not OPEN).

Exit status: 0 when discrepancies = 0, 1 otherwise, 2 when something could not be read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from adsmon.billing.v1 import billing_pb2, billing_pb2_grpc
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from services.kit.clients import sync_channel
from services.kit.identities import CallerCredentials
from services.kit.kafka import decode_event

SERVICES = ("connects", "ads", "billing")
DEFAULT_GRPC = {"connects": 50051, "ads": 50052, "billing": 50053}


@dataclass
class Report:
    """The checker's figures and the discrepancies it found (one line each)."""

    figures: dict[str, int] = field(default_factory=dict)
    discrepancies: list[str] = field(default_factory=list)

    def figure(self, name: str, value: int) -> None:
        self.figures[name] = self.figures.get(name, 0) + value

    def fail(self, what: str, count: int = 1) -> None:
        if count:
            self.discrepancies.append(f"{what} ({count})" if count != 1 else what)

    @property
    def count(self) -> int:
        return len(self.discrepancies)

    def text(self, operations: Mapping[str, int] | None = None) -> str:
        lines = ["checker figures:"]
        for name, value in (operations or {}).items():
            lines.append(f"  operations {name:28s} {value}")
        for name, value in sorted(self.figures.items()):
            lines.append(f"  {name:39s} {value}")
        lines.append(f"  discrepancies{'':26s} {self.count}")
        lines.extend(f"    - {d}" for d in self.discrepancies)
        return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """Where the suite under check lives."""

    database_urls: dict[str, str]
    kafka_bootstrap: str
    topic_prefix: str
    group_prefix: str
    billing_target: str
    credentials: CallerCredentials  # the operator's certificate (mutual TLS) or the shared secret (plaintext)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Target:
        local = Path(env.get("ADSMON_LOCAL", ".local"))
        urls = {}
        for svc in SERVICES:
            url = env.get(f"ADSMON_{svc.upper()}_DATABASE_URL", "")
            if not url or env.get("DB", "") == "sqlite":
                url = f"sqlite:///{local}/{svc}.db"  # `make run`'s default (run_suite.service_env)
            urls[svc] = url
        port = env.get("ADSMON_BILLING_GRPC_PORT", "") or str(DEFAULT_GRPC["billing"])
        return cls(urls, env.get("ADSMON_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
                   env.get("ADSMON_KAFKA_TOPIC_PREFIX", ""), env.get("ADSMON_KAFKA_GROUP_PREFIX", ""),
                   f"127.0.0.1:{port}", CallerCredentials.from_env(env))


def _scalar(conn: sa.Connection, sql: str, **params: object) -> int:
    return int(conn.execute(sa.text(sql), params).scalar_one() or 0)


# -- the ledger ----------------------------------------------------------------------------------------

def check_ledger(conn: sa.Connection, report: Report) -> dict[str, tuple[str, int]]:
    """The ledger's own invariants; returns hold_id -> (status, captured) for the ads comparison."""
    report.figure("ledger transactions", _scalar(conn, "SELECT count(*) FROM ledger_transactions"))
    report.figure("ledger wallets", _scalar(conn, "SELECT count(*) FROM wallets"))
    total = _scalar(conn, "SELECT coalesce(sum(amount), 0) FROM postings")
    if total:
        report.fail(f"ledger: postings sum to {total}, not zero")
    report.fail("ledger: transactions whose postings do not sum to zero", _scalar(conn, """
        SELECT count(*) FROM (SELECT transaction_id FROM postings GROUP BY transaction_id
                              HAVING sum(amount) <> 0) x"""))
    report.fail("ledger: wallets that differ from their lots or their postings", _scalar(conn, """
        SELECT count(*) FROM wallets w
        LEFT JOIN (SELECT account_id, sum(remaining) r, sum(held) h FROM lots GROUP BY account_id) l
          ON l.account_id = w.account_id
        LEFT JOIN (SELECT substr(ledger_account, 8) a, sum(amount) s FROM postings
                   WHERE ledger_account LIKE 'wallet:%' GROUP BY 1) p ON p.a = w.account_id
        WHERE w.available <> coalesce(l.r, 0) OR w.held <> coalesce(l.h, 0) OR w.available <> coalesce(p.s, 0)"""))
    held = _scalar(conn, "SELECT coalesce(sum(held), 0) FROM wallets")
    open_holds = _scalar(conn, "SELECT coalesce(sum(amount), 0) FROM holds WHERE status = 'OPEN'")
    holds_account = _scalar(conn, "SELECT coalesce(sum(amount), 0) FROM postings WHERE ledger_account = 'system:holds'")
    if not held == open_holds == holds_account:
        report.fail(f"ledger: held {held}, open holds {open_holds}, system:holds {holds_account} differ")
    report.fail("ledger: holds resolved more than once", _scalar(conn, """
        SELECT count(*) FROM (SELECT hold_id FROM ledger_transactions
                              WHERE hold_id IS NOT NULL AND kind IN ('CAPTURE', 'RELEASE')
                              GROUP BY hold_id HAVING count(*) > 1) x"""))
    report.fail("ledger: resolved holds without their capture or release", _scalar(conn, """
        SELECT count(*) FROM holds h WHERE h.status <> 'OPEN' AND NOT EXISTS (
            SELECT 1 FROM ledger_transactions t WHERE t.hold_id = h.hold_id AND t.kind IN ('CAPTURE', 'RELEASE'))"""))
    holds = {r.hold_id: (r.status, int(r.captured))
             for r in conn.execute(sa.text("SELECT hold_id, status, captured FROM holds"))}
    report.figure("ledger holds", len(holds))
    report.figure("ledger holds open", sum(1 for s, _ in holds.values() if s == "OPEN"))
    return holds


def purchase_credits(conn: sa.Connection) -> dict[str, list[int]]:
    """reference 'purchase:<id>' -> amounts of the ledger's purchase credits for it."""
    credits: dict[str, list[int]] = {}
    for row in conn.execute(sa.text(
            "SELECT reference, amount FROM ledger_transactions WHERE kind = 'CREDIT' AND reference LIKE 'purchase:%'")):
        credits.setdefault(row.reference.removeprefix("purchase:"), []).append(int(row.amount))
    return credits


# -- billing and ads -----------------------------------------------------------------------------------

def check_billing(conn: sa.Connection, credits: dict[str, list[int]], report: Report) -> None:
    rows = list(conn.execute(sa.text("SELECT purchase_id, state, connects FROM purchases")))
    states = Counter(r.state for r in rows)
    for state, n in states.items():
        report.figure(f"billing purchases {state.lower()}", n)
    wrong = twice = never = 0
    for r in rows:
        got = credits.get(r.purchase_id, [])
        if r.state in ("COMPLETED", "CHARGED_BACK"):
            if len(got) > 1:
                twice += 1
            elif not got:
                never += 1
            elif got[0] != r.connects:
                wrong += 1
        elif got:  # FAILED or PENDING purchases hold no Connects
            wrong += 1
    report.fail("billing: purchases credited more than once", twice)
    report.fail("billing: completed purchases never credited", never)
    report.fail("billing: purchases credited a wrong amount or while not completed", wrong)
    report.fail("billing: purchases left pending", states.get("PENDING", 0))
    known = {r.purchase_id for r in rows}
    report.fail("ledger: purchase credits billing does not know", sum(1 for p in credits if p not in known))


def check_ads(conn: sa.Connection, holds: dict[str, tuple[str, int]], report: Report) -> None:
    steps = list(conn.execute(sa.text("SELECT hold_id, action, amount, status FROM ads_settlement_steps")))
    report.figure("ads settlement steps", len(steps))
    report.figure("ads bids", _scalar(conn, "SELECT count(*) FROM ads_bids"))
    pending = unresolved = 0
    for s in steps:
        if s.status != "DONE":
            pending += 1
            continue
        status, _ = holds.get(s.hold_id, ("MISSING", 0))
        if status in ("OPEN", "MISSING") or (s.action == "CAPTURE" and status not in ("CAPTURED", "EXPIRED")):
            unresolved += 1
    report.fail("ads: settlement steps left pending", pending)
    report.fail("ads: settled steps whose ledger hold does not match", unresolved)
    report.fail("ads: badge charges left pending",
                _scalar(conn, "SELECT count(*) FROM ads_badge_charges WHERE status = 'PENDING'"))


def reconcile(target: Target, report: Report) -> None:
    creds = target.credentials
    with sync_channel(target.billing_target, secret=creds.secret, tls=creds.files("operator"), caller="operator",
                      default_timeout=30) as ch:
        reply = billing_pb2_grpc.BillingServiceStub(ch).Reconcile(
            billing_pb2.ReconcileRequest(request_id=f"chaos-check-{uuid.uuid4().hex}"))
    report.figure("billing reconcile accounts checked", reply.accounts_checked)
    for m in reply.mismatches:
        report.fail(f"billing: Reconcile mismatch {billing_pb2.MismatchKind.Name(m.kind)} account {m.account_id!r} "
                    f"purchase {m.purchase_id!r}: billing {m.billing_connects}, ledger {m.ledger_connects}")


# -- outboxes, Kafka, consumers ------------------------------------------------------------------------

def outbox_rows(engine: sa.Engine) -> tuple[dict[str, set[str]], int]:
    """topic -> relayed event_ids, and the count of rows not relayed yet."""
    relayed: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for row in conn.execute(sa.text("SELECT topic, event_id, published_at FROM outbox")):
            if row.published_at is not None:
                relayed.setdefault(row.topic, set()).add(row.event_id)
        unpublished = _scalar(conn, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
    return relayed, unpublished


def kafka_event_ids(bootstrap: str, topics: list[str]) -> dict[str, Counter[str]]:
    """topic -> event_id -> copies on Kafka (every record from the beginning to the current end)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=2000, request_timeout_ms=20000)
    seen: dict[str, Counter[str]] = {t: Counter() for t in topics}
    try:
        consumer.topics()  # a metadata round trip: partitions_for_topic answers from the cache
        parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        if not parts:
            return seen
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        remaining = {tp for tp in parts if end[tp] > consumer.position(tp)}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for record in records:
                    try:
                        seen[tp.topic][decode_event(record.value).event_id] += 1
                    except Exception:  # an undecodable record is counted under an empty id
                        seen[tp.topic][""] += 1
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        consumer.close()
    return seen


def consumer_lag(bootstrap: str, group_prefix: str) -> dict[str, int]:
    """group -> records not consumed yet, for every consumer group whose name starts with group_prefix."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        lags = {}
        for entry in admin.list_groups():
            group = str(entry["group_id"] if isinstance(entry, Mapping) else entry[0])
            if not group.startswith(group_prefix):
                continue
            offsets = admin.list_group_offsets({group: None}).get(group, {})
            if not offsets:
                continue
            end = consumer.end_offsets(list(offsets))
            lags[group] = sum(max(0, end[tp] - meta.offset) for tp, meta in offsets.items())
        return lags
    finally:
        consumer.close()
        admin.close()


def check_events(target: Target, engines: dict[str, sa.Engine], report: Report) -> None:
    relayed: dict[str, set[str]] = {}
    for svc, engine in engines.items():
        rows, unpublished = outbox_rows(engine)
        report.figure(f"{svc} outbox relayed", sum(len(ids) for ids in rows.values()))
        report.fail(f"{svc}: outbox rows not relayed", unpublished)
        for topic, ids in rows.items():
            relayed.setdefault(topic, set()).update(ids)
        with engine.connect() as conn:
            report.figure(f"{svc} events consumed (processed)", _scalar(conn, "SELECT count(*) FROM processed_events"))
    # Outbox rows keep logical topic names; the relay adds the environment's prefix (kit.outbox).
    names = sorted(relayed)
    prefix = target.topic_prefix
    dlqs = sorted({f"{prefix}{t}.dlq" for t in names} | {f"{prefix}marketplace.jobs.v1.dlq"})
    on_kafka = kafka_event_ids(target.kafka_bootstrap, [prefix + t for t in names] + dlqs)
    for name in names:
        copies = on_kafka[prefix + name]
        report.figure(f"kafka {name} records", sum(copies.values()))
        report.figure(f"kafka {name} duplicates", sum(n - 1 for n in copies.values() if n > 1))
        report.fail(f"kafka: {name} lacks relayed outbox events", len(relayed[name] - set(copies)))
    report.figure("kafka dead letters", sum(sum(on_kafka[t].values()) for t in set(dlqs)))
    for group, lag in sorted(consumer_lag(target.kafka_bootstrap, target.group_prefix).items()):
        report.fail(f"consumer group {group}: records not consumed", lag)


# -- the whole check -----------------------------------------------------------------------------------

def settled(engines: dict[str, sa.Engine], target: Target) -> bool:
    """Nothing in flight: outboxes relayed, consumers caught up, no purchase, settlement step or badge charge
    pending (a charge claimed by a replica that was killed waits out its claim before another takes it)."""
    try:
        for engine in engines.values():
            with engine.connect() as conn:
                if _scalar(conn, "SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                    return False
        with engines["billing"].connect() as conn:
            if _scalar(conn, "SELECT count(*) FROM purchases WHERE state = 'PENDING'"):
                return False
        with engines["ads"].connect() as conn:
            if _scalar(conn, "SELECT count(*) FROM ads_settlement_steps WHERE status <> 'DONE'"):
                return False
            if _scalar(conn, "SELECT count(*) FROM ads_badge_charges WHERE status = 'PENDING'"):
                return False
        return not any(consumer_lag(target.kafka_bootstrap, target.group_prefix).values())
    except Exception:  # a service or broker still coming back: not settled yet
        return False


def check(target: Target, *, settle: float = 0.0) -> Report:
    """Wait up to `settle` seconds for in-flight work to finish, then compare everything."""
    engines = {svc: sa.create_engine(url) for svc, url in target.database_urls.items()}
    try:
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and not settled(engines, target):
            time.sleep(1.0)
        report = Report()
        with engines["connects"].connect() as conn:
            holds = check_ledger(conn, report)
            credits = purchase_credits(conn)
        with engines["billing"].connect() as conn:
            check_billing(conn, credits, report)
        with engines["ads"].connect() as conn:
            check_ads(conn, holds, report)
        check_events(target, engines, report)
        reconcile(target, report)
        return report
    finally:
        for engine in engines.values():
            engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.check", description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds to wait for in-flight work (relays, consumers, settlements) first")
    args = parser.parse_args(argv)
    try:
        report = check(Target.from_env(), settle=args.settle)
    except Exception as exc:
        print(f"checker: could not read the suite: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(report.text())
    return 1 if report.count else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The three services as real processes on real PostgreSQL and Kafka, for the fuzzer; the run's tally.

Background work that would change state on its own between two snapshots (badge meter, auction closer,
settlement retries, purchase resumer, renewals, expiry sweeper, jobs consumers) runs rarely here, so that
a refused request's "nothing changed" is the request's doing. The budget: FUZZ_EXAMPLES examples per method
(small by default, for `make test`), FUZZ_SEED for the seed; `make fuzz` runs a larger one.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
import sqlalchemy as sa

from tests.e2e.conftest import ServiceProcess, launch, secret_file  # noqa: F401 - fixtures used here

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
SEED = int(os.environ.get("FUZZ_SEED", "20261202"))

QUIET = {"ADSMON_CONNECTS_EXPIRY_INTERVAL_SECONDS": "86400", "ADSMON_CONNECTS_CONSUME_JOBS": "false",
         "ADSMON_ADS_CONSUME_JOBS": "false", "ADSMON_ADS_BADGE_METER_INTERVAL_SECONDS": "3600",
         "ADSMON_ADS_BADGE_PRICING_INTERVAL_SECONDS": "86400", "ADSMON_ADS_CLOSER_INTERVAL_SECONDS": "3600",
         "ADSMON_ADS_SETTLEMENT_INTERVAL_SECONDS": "3600", "ADSMON_BILLING_RESUMER_INTERVAL_SECONDS": "3600",
         "ADSMON_BILLING_RENEWAL_INTERVAL_SECONDS": "86400", "ADSMON_BILLING_SANDBOX_CAPTURE_DELAY_SECONDS": "0"}

# Tables only background work writes (the books consume connects' ledger events; the badge pricer; the
# sandbox provider's webhooks, delivered late and twice; the processed-event ids of consumers): they may move
# between two snapshots whatever the request was.
BACKGROUND_TABLES = frozenset({"alembic_version", "processed_events", "ledger_transactions", "revenue_transactions",
                               "revenue_lots", "revenue_entries", "badge_prices", "provider_events"})


@dataclass
class Tally:
    """What the run sent: requests per method and the codes answered."""

    sent: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    # INVALID_ARGUMENT refusals whose ErrorInfo names no field (reported, not failed: MALFORMED_REQUEST has none)
    without_field: Counter[str] = field(default_factory=Counter)

    def record(self, method: str, code: grpc.StatusCode) -> None:
        self.sent[method] += 1
        self.codes[code.name] += 1


TALLY = Tally()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.sent:
        return
    write = terminalreporter.write_line
    write(f"fuzz: seed {SEED}, {EXAMPLES} examples per method and kind")
    for method in sorted(TALLY.sent):
        write(f"fuzz:   {method:<48} {TALLY.sent[method]:>6} requests")
    write(f"fuzz: {sum(TALLY.sent.values())} requests; codes "
          + ", ".join(f"{k}={v}" for k, v in sorted(TALLY.codes.items())))
    for what, count in sorted(TALLY.without_field.items()):
        write(f"fuzz: INVALID_ARGUMENT without a field: {what} x{count}")
    write(f"fuzz: INTERNAL = {TALLY.codes['INTERNAL']}, UNKNOWN = {TALLY.codes['UNKNOWN']}")


class Snapshot:
    """A fingerprint of a service's database: every table's rows (hashed), the outbox by its highest id."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, pool_size=1, max_overflow=0)
        with self.engine.connect() as conn:
            names = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
            tables = sorted(n for n in names if n not in BACKGROUND_TABLES)
        parts = []
        for name in tables:
            quoted = '"' + name.replace('"', '""') + '"'
            if name == "outbox":
                # The relay marks rows published and deletes old ones; a new row is a new highest id.
                parts.append(f"SELECT '{name}' AS t, coalesce(max(id)::text, '') AS h FROM {quoted}")
            else:
                parts.append(f"SELECT '{name}' AS t, count(*)::text || ':' || "
                             f"coalesce(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '') AS h "
                             f"FROM {quoted} x")
        self.query = sa.text(" UNION ALL ".join(parts))

    def take(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {t: h for t, h in conn.execute(self.query)}

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class Fuzzed:
    """A started service under fuzz, with the snapshots of what a refused request must leave unchanged."""

    process: ServiceProcess
    snapshots: list[Snapshot]

    def state(self) -> list[dict[str, str]]:
        return [s.take() for s in self.snapshots]


@pytest.fixture(scope="module")
def fuzz_suite(launch) -> Iterator[dict[str, Fuzzed]]:  # noqa: F811 - the e2e fixture imported above
    connects = launch("connects", **QUIET)
    billing = launch("billing", ADSMON_BILLING_CONNECTS_TARGET=connects.target, **QUIET)
    ads = launch("ads", ADSMON_ADS_CONNECTS_TARGET=connects.target, **QUIET)
    urls = {p.name: p.env[f"ADSMON_{p.name.upper()}_DATABASE_URL"] for p in (connects, billing, ads)}
    snaps = {name: Snapshot(url) for name, url in urls.items()}
    # A refused ads or billing request must not have moved Connects either.
    suite = {"connects": Fuzzed(connects, [snaps["connects"]]),
             "ads": Fuzzed(ads, [snaps["ads"], snaps["connects"]]),
             "billing": Fuzzed(billing, [snaps["billing"], snaps["connects"]])}
    yield suite
    for snap in snaps.values():
        snap.close()
    for p in (ads, billing, connects):
        p.stop()

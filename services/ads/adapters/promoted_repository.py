"""SQLAlchemy repositories and unit of work for promoted profiles, and the reader replicas poll.

The budget reservation is one statement (`UPDATE ... WHERE spent < budget RETURNING spent`): PostgreSQL
serialises concurrent clicks on the day's row, so the guard always sees the committed spend.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row

from services.ads.adapters.promoted_tables import budget_days, campaigns, clicks, requests
from services.ads.domain.promoted import BudgetDay, Campaign, CampaignState, Click, ClickOutcome
from services.ads.service_layer.promoted import (
    AbstractBudgetRepository,
    AbstractCampaignRepository,
    AbstractClickRepository,
    AbstractPromotedReader,
    AbstractRequestRepository,
    PromotedUnitOfWork,
)
from services.kit.db import is_postgres
from services.kit.uow import SqlAlchemyUnitOfWork

# A transaction stamps changed_at when it starts (now()), and may commit a little later: a replica polls
# from this much before its last poll so that such rows are not missed (re-applying a row is harmless).
LOOKBACK = timedelta(seconds=3)


def _insert(conn: Connection, table: sa.Table) -> Any:
    return (postgresql.insert(table) if is_postgres(conn) else sqlite.insert(table))


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def campaign_from_row(r: Row[Any]) -> Campaign:
    return Campaign(campaign_id=r.campaign_id, freelancer_id=r.freelancer_id, category=r.category,
                    max_cpc=r.max_cpc, daily_budget=r.daily_budget, quality_bps=r.quality_bps,
                    state=CampaignState(r.state), created_at=_utc(r.created_at), updated_at=_utc(r.updated_at),
                    revision=r.revision, frequency_cap=r.frequency_cap)


def _campaign_values(c: Campaign) -> dict[str, Any]:
    return {"campaign_id": c.campaign_id, "freelancer_id": c.freelancer_id, "category": c.category,
            "max_cpc": c.max_cpc, "daily_budget": c.daily_budget, "quality_bps": c.quality_bps,
            "state": c.state.value, "revision": c.revision, "frequency_cap": c.frequency_cap,
            "created_at": c.created_at, "updated_at": c.updated_at,
            "changed_at": sa.func.now()}


class SqlAlchemyCampaignRepository(AbstractCampaignRepository):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, campaign: Campaign) -> None:
        self.conn.execute(campaigns.insert().values(**_campaign_values(campaign)))

    def get(self, campaign_id: str) -> Campaign | None:
        row = self.conn.execute(campaigns.select().where(campaigns.c.campaign_id == campaign_id)).first()
        return campaign_from_row(row) if row else None

    def save(self, campaign: Campaign) -> None:
        self.conn.execute(campaigns.update().where(campaigns.c.campaign_id == campaign.campaign_id)
                          .values(**_campaign_values(campaign)))

    def list_for(self, freelancer_id: str, limit: int, before: tuple[datetime, str] | None) -> list[Campaign]:
        q = campaigns.select().where(campaigns.c.freelancer_id == freelancer_id)
        if before is not None:
            created, campaign_id = before
            q = q.where(sa.or_(campaigns.c.created_at < created,
                               sa.and_(campaigns.c.created_at == created, campaigns.c.campaign_id < campaign_id)))
        q = q.order_by(campaigns.c.created_at.desc(), campaigns.c.campaign_id.desc()).limit(limit)
        return [campaign_from_row(r) for r in self.conn.execute(q)]


def _day_from_row(r: Row[Any]) -> BudgetDay:
    return BudgetDay(r.campaign_id, r.day, r.spent, r.stopped)


class SqlAlchemyBudgetRepository(AbstractBudgetRepository):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, campaign_id: str, day: date) -> BudgetDay | None:
        row = self.conn.execute(budget_days.select().where(budget_days.c.campaign_id == campaign_id,
                                                           budget_days.c.day == day)).first()
        return _day_from_row(row) if row else None

    def reserve(self, campaign_id: str, day: date, budget: int, price: int) -> int | None:
        self.conn.execute(_insert(self.conn, budget_days).values(
            campaign_id=campaign_id, day=day, budget=budget, spent=0, stopped=False).on_conflict_do_nothing())
        t = budget_days.c
        return self.conn.execute(
            budget_days.update()
            .where(t.campaign_id == campaign_id, t.day == day, t.spent < t.budget, t.stopped.is_(False))
            .values(spent=t.spent + price, changed_at=sa.func.now())
            .returning(t.spent)).scalar_one_or_none()

    def refund(self, campaign_id: str, day: date, price: int, *, stop: bool) -> None:
        t = budget_days.c
        values: dict[str, Any] = {"spent": t.spent - price, "changed_at": sa.func.now()}
        if stop:
            values["stopped"] = True
        self.conn.execute(budget_days.update().where(t.campaign_id == campaign_id, t.day == day).values(**values))


def _click_from_row(r: Row[Any]) -> Click:
    return Click(click_key=r.click_key, token_id=r.token_id, request_id=r.request_id, campaign_id=r.campaign_id,
                 freelancer_id=r.freelancer_id, category=r.category, position=r.position, price=r.price, day=r.day,
                 outcome=ClickOutcome(r.outcome), transaction_id=r.transaction_id, created_at=_utc(r.created_at),
                 request_fingerprint=r.request_fingerprint)


class SqlAlchemyClickRepository(AbstractClickRepository):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def claim(self, click: Click) -> Click | None:
        now = click.created_at
        inserted = self.conn.execute(_insert(self.conn, clicks).values(
            click_key=click.click_key, token_id=click.token_id, request_id=click.request_id,
            request_fingerprint=click.request_fingerprint, campaign_id=click.campaign_id,
            freelancer_id=click.freelancer_id, category=click.category, position=click.position,
            price=click.price, day=click.day, outcome=click.outcome.value, transaction_id=click.transaction_id,
            created_at=now, updated_at=now).on_conflict_do_nothing().returning(clicks.c.click_key)).first()
        if inserted is not None:
            return None
        row = self.conn.execute(clicks.select().where(clicks.c.click_key == click.click_key)).one()
        return _click_from_row(row)

    def resolve(self, click_key: str, outcome: ClickOutcome, transaction_id: str, now: datetime) -> bool:
        done = self.conn.execute(clicks.update().where(clicks.c.click_key == click_key,
                                                       clicks.c.outcome == ClickOutcome.PENDING.value)
                                 .values(outcome=outcome.value, transaction_id=transaction_id, updated_at=now))
        return done.rowcount == 1

    def pending(self, older_than: datetime, limit: int) -> list[Click]:
        q = (clicks.select().where(clicks.c.outcome == ClickOutcome.PENDING.value, clicks.c.created_at < older_than)
             .order_by(clicks.c.created_at).limit(limit))
        return [_click_from_row(r) for r in self.conn.execute(q)]


class SqlAlchemyRequestRepository(AbstractRequestRepository):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, request_id: str) -> tuple[str, bytes] | None:
        row = self.conn.execute(sa.select(requests.c.fingerprint, requests.c.answer)
                                .where(requests.c.request_id == request_id)).first()
        return (row.fingerprint, bytes(row.answer)) if row else None

    def add(self, request_id: str, fingerprint: str, answer: bytes, now: datetime) -> None:
        self.conn.execute(_insert(self.conn, requests).values(
            request_id=request_id, fingerprint=fingerprint, answer=answer, created_at=now).on_conflict_do_nothing())


class SqlAlchemyPromotedUnitOfWork(SqlAlchemyUnitOfWork, PromotedUnitOfWork):
    def open_repositories(self, conn: Connection) -> None:
        self.campaigns = SqlAlchemyCampaignRepository(conn)
        self.budgets = SqlAlchemyBudgetRepository(conn)
        self.clicks = SqlAlchemyClickRepository(conn)
        self.requests = SqlAlchemyRequestRepository(conn)


class SqlAlchemyPromotedReader(AbstractPromotedReader):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def changed_since(self, since: datetime | None, day: date) -> tuple[list[Campaign], list[BudgetDay], datetime]:
        with self.engine.connect() as conn:
            db_now = (_utc(conn.execute(sa.select(sa.func.now())).scalar_one()) if is_postgres(conn)
                      else datetime.now(UTC))
            cq = campaigns.select()
            dq = budget_days.select().where(budget_days.c.day == day)
            if since is not None:
                cq = cq.where(campaigns.c.changed_at >= since - LOOKBACK)
                dq = dq.where(budget_days.c.changed_at >= since - LOOKBACK)
            found = [campaign_from_row(r) for r in conn.execute(cq)]
            days = [_day_from_row(r) for r in conn.execute(dq)]
        return found, days, db_now

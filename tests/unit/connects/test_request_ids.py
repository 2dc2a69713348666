"""Request ids (service layer on the fakes): the reserved namespace, reuse across accounts and methods."""

from __future__ import annotations

import pytest

from services.connects.domain import commands as c
from services.connects.domain.model import LotSource, ReturnReason, SpendReason
from services.kit.errors import InvalidArgument
from tests.conftest import unique
from tests.unit.connects.conftest import ok, run
from tests.unit.connects.fakes import FakeLedgerStore


@pytest.mark.parametrize("request_id", [c.RESERVED_REQUEST_ID_PREFIX, f"{c.RESERVED_REQUEST_ID_PREFIX}job-return:x",
                                        f"{c.RESERVED_REQUEST_ID_PREFIX}anything"])
def test_every_command_refuses_a_client_request_id_in_the_reserved_namespace(request_id):
    builds = [lambda: c.Credit(request_id, "a", 1, LotSource.BONUS),
              lambda: c.Spend(request_id, "a", 1, SpendReason.PROPOSAL),
              lambda: c.PlaceHold(request_id, "a", 1, SpendReason.PROPOSAL),
              lambda: c.CaptureHold(request_id, "h", 1), lambda: c.ReleaseHold(request_id, "h"),
              lambda: c.ReturnConnects(request_id, "t", ReturnReason.JOB_REMOVED_TOS)]
    for build in builds:
        with pytest.raises(InvalidArgument) as exc:
            build()
        assert (exc.value.reason, exc.value.metadata["field"]) == ("RESERVED_REQUEST_ID", "request_id")


def test_request_id_reused_for_another_account_or_method_with_identical_fields_is_refused():
    store, a, b = FakeLedgerStore(), unique("a"), unique("b")
    rid = unique("r")
    ok(run(store, c.Credit(rid, a, 5, LotSource.BONUS))[0])
    (other_account,) = run(store, c.Credit(rid, b, 5, LotSource.BONUS))
    (other_source,) = run(store, c.Credit(rid, a, 5, LotSource.PLAN_GRANT))
    (other_method,) = run(store, c.Spend(rid, a, 5, SpendReason.PROPOSAL))
    for refused in (other_account, other_source, other_method):
        assert (refused.error.code, refused.error.reason) == ("ALREADY_EXISTS", "REQUEST_ID_REUSED")
    assert b not in store.wallets or store.wallets[b].available == 0
    assert store.wallets[a].available == 5

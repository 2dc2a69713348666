"""The catalog's prices: integer cents at USD 0.15 a Connect; refusals name the field."""

from __future__ import annotations

import pytest

from services.billing.domain import catalog
from services.billing.domain.errors import BundleNotFound, CurrencyNotSupported, QuantityOutOfRange


@pytest.mark.parametrize("size", [10, 20, 40, 60, 80])
def test_every_freelancer_bundle_costs_15_cents_a_connect(size):
    item = catalog.price(bundle_id=f"connects-{size}", agency=False)
    assert (item.connects, item.amount_minor, item.currency) == (size, 15 * size, "USD")
    assert isinstance(item.amount_minor, int)


def test_agencies_also_buy_150_and_300_but_freelancers_do_not():
    assert catalog.price(bundle_id="connects-300", agency=True).amount_minor == 4500
    assert catalog.price(bundle_id="connects-150", agency=True).amount_minor == 2250
    with pytest.raises(BundleNotFound) as exc:
        catalog.price(bundle_id="connects-150", agency=False)
    assert exc.value.metadata["field"] == "bundle_id"


def test_an_unknown_bundle_is_not_found():
    with pytest.raises(BundleNotFound):
        catalog.price(bundle_id="connects-41", agency=True)


@pytest.mark.parametrize("quantity, cents", [(1, 15), (7, 105), (333, 4995), (10_000, 150_000)])
def test_a_custom_quantity_is_priced_at_the_unit_price(quantity, cents):
    item = catalog.price(quantity=quantity, agency=False)
    assert (item.bundle_id, item.connects, item.amount_minor) == ("", quantity, cents)


@pytest.mark.parametrize("quantity", [0, -1, 10_001, 2**63 - 1])
def test_a_custom_quantity_of_zero_negative_or_absurd_is_out_of_range(quantity):
    with pytest.raises(QuantityOutOfRange) as exc:
        catalog.price(quantity=quantity, agency=False)
    assert exc.value.metadata == {"field": "quantity", "min": "1", "max": "10000"}


@pytest.mark.parametrize("currency", ["EUR", "usd", "XXX"])
def test_only_usd_is_sold(currency):
    with pytest.raises(CurrencyNotSupported) as exc:
        catalog.price(quantity=10, agency=False, currency=currency)
    assert exc.value.metadata["field"] == "currency_code"


def test_an_empty_currency_means_usd():
    assert catalog.price(quantity=10, agency=False, currency="").currency == "USD"
    assert catalog.price(quantity=10, agency=False, currency="USD").currency == "USD"

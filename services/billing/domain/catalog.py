"""The Connects catalog and its pricing (DOMAIN.md, "Price"): integer cents, one unit price everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from services.billing.domain.errors import BundleNotFound, CurrencyNotSupported, QuantityOutOfRange

UNIT_PRICE_MINOR = 15  # USD 0.15 per Connect, in cents, in every bundle
CURRENCY = "USD"
FREELANCER_BUNDLES = (10, 20, 40, 60, 80)
AGENCY_ONLY_BUNDLES = (150, 300)
# Custom quantities (ours): at least one Connect, at most 10,000 in one purchase (USD 1,500).
MIN_CUSTOM_QUANTITY = 1
MAX_CUSTOM_QUANTITY = 10_000


@dataclass(frozen=True)
class Bundle:
    bundle_id: str
    connects: int
    price_minor: int
    agency_only: bool


@dataclass(frozen=True)
class Priced:
    """What a purchase buys and costs: `bundle_id` empty for a custom quantity."""

    bundle_id: str
    connects: int
    amount_minor: int
    currency: str


def bundles(*, agency: bool) -> list[Bundle]:
    """Bundles an account may buy, smallest first; agencies also see the large ones."""
    sizes = FREELANCER_BUNDLES + (AGENCY_ONLY_BUNDLES if agency else ())
    return [Bundle(f"connects-{n}", n, n * UNIT_PRICE_MINOR, n in AGENCY_ONLY_BUNDLES) for n in sizes]


def check_currency(currency: str) -> str:
    """The currency to charge: empty means the catalog's; anything else but USD is refused."""
    code = currency or CURRENCY
    if code != CURRENCY:
        raise CurrencyNotSupported(currency, CURRENCY)
    return code


def price(*, bundle_id: str | None = None, quantity: int | None = None, agency: bool,
          currency: str = "") -> Priced:
    """Price a bundle or a custom quantity for an account type. Exactly one of bundle_id or quantity."""
    code = check_currency(currency)
    if bundle_id is not None:
        for b in bundles(agency=agency):
            if b.bundle_id == bundle_id:
                return Priced(b.bundle_id, b.connects, b.price_minor, code)
        raise BundleNotFound(bundle_id)
    if quantity is None or isinstance(quantity, bool) or not MIN_CUSTOM_QUANTITY <= quantity <= MAX_CUSTOM_QUANTITY:
        raise QuantityOutOfRange(quantity or 0, MIN_CUSTOM_QUANTITY, MAX_CUSTOM_QUANTITY)
    return Priced("", quantity, quantity * UNIT_PRICE_MINOR, code)

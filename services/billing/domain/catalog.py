"""The Connects catalog: bundles on sale and their prices (DOMAIN.md, "Price")."""

from __future__ import annotations

from dataclasses import dataclass

UNIT_PRICE_MINOR = 15  # USD 0.15 per Connect, in cents, in every bundle
CURRENCY = "USD"
FREELANCER_BUNDLES = (10, 20, 40, 60, 80)
AGENCY_ONLY_BUNDLES = (150, 300)


@dataclass(frozen=True)
class Bundle:
    bundle_id: str
    connects: int
    price_minor: int
    agency_only: bool


def bundles(*, agency: bool) -> list[Bundle]:
    """Bundles an account may buy, smallest first; agencies also see the large ones."""
    sizes = FREELANCER_BUNDLES + (AGENCY_ONLY_BUNDLES if agency else ())
    return [Bundle(f"connects-{n}", n, n * UNIT_PRICE_MINOR, n in AGENCY_ONLY_BUNDLES) for n in sizes]

"""What the use cases report to monitoring; adapters/metrics.py implements it with Prometheus."""

from __future__ import annotations

from typing import Protocol


class Metrics(Protocol):
    def auction_opened(self, placebo: bool) -> None: ...

    def auction_closed(self, reason: str) -> None: ...

    def bid_placed(self, raised: bool, placebo: bool) -> None: ...

    def bid_refused(self, reason: str) -> None: ...

    def step_settled(self, action: str, outcome: str, connects: int) -> None:
        """outcome: CAPTURED / RELEASED (connects = Connects captured / released), RETRY, or the refusal that
        ended the step (HOLD_EXPIRED, HOLD_NOT_OPEN)."""

    def connects_error(self, method: str, reason: str) -> None: ...

    def badge_charged(self, connects: int) -> None: ...

    def badge_stopped(self, reason: str) -> None: ...


class NoMetrics:
    def auction_opened(self, placebo: bool) -> None:
        pass

    def auction_closed(self, reason: str) -> None:
        pass

    def bid_placed(self, raised: bool, placebo: bool) -> None:
        pass

    def bid_refused(self, reason: str) -> None:
        pass

    def step_settled(self, action: str, outcome: str, connects: int) -> None:
        pass

    def connects_error(self, method: str, reason: str) -> None:
        pass

    def badge_charged(self, connects: int) -> None:
        pass

    def badge_stopped(self, reason: str) -> None:
        pass

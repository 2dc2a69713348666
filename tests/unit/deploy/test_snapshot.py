"""`make snapshot`'s legends: Grafana's {{label}} format applied to a series' labels, as Grafana shows them."""

from __future__ import annotations

from deploy.grafana.snapshot import legend


def test_a_fixed_legend_is_shown_as_written():
    assert legend("open holds", {"job": "adsmon-connects"}) == "open holds"
    assert legend("p50", {}) == "p50"


def test_label_placeholders_are_filled_from_the_series():
    assert legend("{{direction}} {{source_or_reason}}", {"direction": "in", "source_or_reason": "BONUS"}) == \
        "in BONUS"


def test_the_zero_fallback_series_of_a_labelled_legend_says_none():
    assert legend("{{service}} {{topic}}", {}) == "none (0)"


def test_no_legend_lists_the_labels():
    assert legend("__auto", {"__name__": "up", "job": "adsmon-ads"}) == "job=adsmon-ads"

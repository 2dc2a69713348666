"""`make snapshot`: draw every dashboard panel from the running Prometheus into one PNG, for a machine without Grafana.

    python -m deploy.grafana.snapshot [--minutes 15] [--out .local/snapshot.png] [--dashboards overview,connects]

Each panel's queries go through Prometheus' query_range over the last N
minutes, with Grafana's variables filled in ($job: every adsmon job,
$__rate_interval: 4 scrape intervals or the step). A panel without data is
drawn as such, with the reason its spec gives; a summary (`<out>.json`:
series per panel) lets a test check that nothing was empty.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, PercentFormatter

from deploy.grafana.dashboards import DASHBOARDS
from deploy.grafana.planned import PENDING
from deploy.grafana.spec import Dashboard, Panel

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = 3
MAX_SERIES = 8  # per panel: the largest by last value, so the legend stays readable
LEGEND_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


@dataclass
class Series:
    label: str
    times: list[float]
    values: list[float]


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as reply:  # noqa: S310
        body = json.load(reply)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return list(body["data"]["result"])


def legend(fmt: str, metric: dict[str, str]) -> str:
    if not fmt or fmt == "__auto":
        return ",".join(f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__") or "value"
    names = LEGEND_RE.findall(fmt)
    if names and not any(metric.get(name) for name in names):  # e.g. the `or on() vector(0)` fallback
        return "none (0)" if not metric else ",".join(f"{k}={v}" for k, v in sorted(metric.items()))
    return LEGEND_RE.sub(lambda m: metric.get(m.group(1), ""), fmt).strip()


def panel_series(base: str, panel: Panel, start: float, end: float, step: float) -> list[Series]:
    rate_interval = f"{max(int(step) * 4, 20)}s"
    out = []
    for q in panel.queries:
        for result in query_range(base, q.concrete(rate_interval=rate_interval, range_=f"{int(end - start)}s"),
                                  start, end, step):
            points = [(float(t), float(v)) for t, v in result["values"] if math.isfinite(float(v))]
            if points:
                times, values = zip(*points, strict=True)
                out.append(Series(legend(q.legend, result["metric"]), list(times), list(values)))
    out.sort(key=lambda s: -abs(s.values[-1]))
    return out


def _formatter(unit: str) -> Any:
    if unit == "percentunit":
        return PercentFormatter(1.0, decimals=1)
    suffix = {"s": " s", "reqps": "/s", "ops": "/s"}.get(unit, "")
    return FuncFormatter(lambda v, _: f"{v:.3g}{suffix}")


def draw(ax: Any, panel: Panel, series: list[Series], why_empty: str, time_format: str) -> None:
    ax.set_title(panel.title, fontsize=9, loc="left")
    ax.tick_params(labelsize=7)
    if not series:
        ax.text(0.5, 0.5, "no data\n" + textwrap.fill(why_empty, 60), ha="center", va="center", fontsize=8,
                color="grey", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if panel.kind == "stat":
        shown = series[:MAX_SERIES]
        ax.axis("off")
        for i, s in enumerate(shown):
            ax.text(0.02, 0.85 - i * (0.8 / max(len(shown), 1)), f"{s.label}: {s.values[-1]:,.0f}",
                    fontsize=11, transform=ax.transAxes, va="top")
        return
    for s in series[:MAX_SERIES]:
        ax.plot([datetime.fromtimestamp(t, UTC) for t in s.times], s.values, linewidth=1, label=s.label[:48])
    ax.xaxis.set_major_formatter(mdates.DateFormatter(time_format))
    locator = mdates.AutoDateLocator(maxticks=6)
    locator.intervald[mdates.SECONDLY] = [5, 10, 15, 30]  # short windows (the e2e test's minute)
    ax.xaxis.set_major_locator(locator)
    ax.yaxis.set_major_formatter(_formatter(panel.unit))
    ax.set_ylim(bottom=min(0.0, *(min(s.values) for s in series)))
    ax.grid(alpha=0.3)
    extra = f" (+{len(series) - MAX_SERIES} more)" if len(series) > MAX_SERIES else ""
    ax.legend(fontsize=6, loc="upper left", title=extra or None, title_fontsize=6, framealpha=0.6)


def snapshot(base: str, boards: list[Dashboard], minutes: float, out: Path) -> dict[str, dict[str, int]]:
    end = time.time()
    start = end - minutes * 60
    step = max(5.0, minutes * 60 / 240)
    grid_rows = [math.ceil(len(b.panels()) / COLUMNS) for b in boards]
    fig = plt.figure(figsize=(6 * COLUMNS, 0.6 * len(boards) + 3.0 * sum(grid_rows)))
    heights = [r for n in grid_rows for r in (0.25, *[1.0] * n)]
    spec = fig.add_gridspec(len(heights), COLUMNS, height_ratios=heights, hspace=0.55, wspace=0.18)
    summary: dict[str, dict[str, int]] = {}
    row = 0
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end))
    for board, n_rows in zip(boards, grid_rows, strict=True):
        header = fig.add_subplot(spec[row, :])
        header.axis("off")
        header.text(0, 0.2, f"{board.title}  -  last {minutes:g} min to {stamp}", fontsize=14, weight="bold")
        row += 1
        summary[board.uid] = {}
        for i, panel in enumerate(board.panels()):
            ax = fig.add_subplot(spec[row + i // COLUMNS, i % COLUMNS])
            series = panel_series(base, panel, start, end, step)
            summary[board.uid][panel.title] = len(series)
            why = (f"{panel.planned} does not export these metrics yet" if panel.planned in PENDING
                   else panel.may_be_empty or "(the panel says it always has data)")
            draw(ax, panel, series, why, "%H:%M:%S" if minutes < 10 else "%H:%M")
        row += n_rows
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(fig)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.grafana.snapshot", description=__doc__.splitlines()[0])
    port = os.environ.get("ADSMON_PROM_PORT", "9090")
    parser.add_argument("--prometheus", default=f"http://127.0.0.1:{port}", help="Prometheus base URL")
    parser.add_argument("--minutes", type=float, default=15.0, help="time window (default 15)")
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "snapshot.png")
    parser.add_argument("--dashboards", default="", help="comma-separated: overview, connects, ads, billing")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.dashboards.split(",") if n.strip()]
    boards = [b for b in DASHBOARDS.values() if not names or b.uid.removeprefix("adsmon-") in names]
    if not boards:
        raise SystemExit(f"no dashboard matches {args.dashboards!r}")
    try:
        summary = snapshot(args.prometheus.rstrip("/"), boards, args.minutes, args.out)
    except OSError as exc:
        print(f"cannot reach Prometheus at {args.prometheus} ({exc}); is `make run` running?", file=sys.stderr)
        return 1
    empty = [f"{uid} / {title}" for uid, panels in summary.items() for title, n in panels.items() if n == 0]
    total = sum(len(p) for p in summary.values())
    print(f"wrote {args.out} ({total} panels, {len(empty)} without data)")
    for name in empty:
        print(f"  no data: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

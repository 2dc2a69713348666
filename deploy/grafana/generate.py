"""Write the Grafana dashboards (deploy/grafana/dashboards/*.json) from deploy/grafana/dashboards.py.

    python -m deploy.grafana.generate

The dashboards are described with the typed spec in deploy/grafana/spec.py and
rendered through grafana-foundation-sdk's models; tests/unit/deploy/
test_monitoring.py checks the committed JSON is what this produces.
"""

from __future__ import annotations

from pathlib import Path

from deploy.grafana.dashboards import DASHBOARDS
from deploy.grafana.spec import render as render_one

OUT = Path(__file__).resolve().parent / "dashboards"


def render() -> dict[str, str]:
    return {name: render_one(spec) for name, spec in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()

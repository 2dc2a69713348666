"""README's "Talking to a running suite" walk, run line by line in bash against a real connects.

The lines run as written, from the repository root, in a shell without the suite's ADSMON_* settings (as a
new engineer's shell would be); only connects' default addresses are replaced by the ports this test
started it on. connects serves mutual TLS with the development CA the README points at (as `make run` does), so
the operator's certificate it names is accepted; the plaintext block after it runs against a plaintext connects
with the secret it names.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
SECTION = "## Talking to a running suite"
DEFAULT_GRPC, DEFAULT_METRICS = "127.0.0.1:50051", "127.0.0.1:9101"


def readme_walk(index: int = 0) -> list[str]:
    """The commands of the section's code block `index` (0: mTLS, 1: plaintext), continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) > index, "the section lacks its code blocks"
    return blocks[index].replace("\\\n", " ").splitlines()


def test_the_readme_walk_names_the_certificates_it_needs_and_the_default_ports():
    walk = "\n".join(readme_walk())
    assert "TLS=.local/secrets/tls" in walk and "$TLS/operator.key" in walk and "-plaintext" not in walk
    assert DEFAULT_GRPC in walk and DEFAULT_METRICS in walk
    assert "export ADSMON_AUTH_SECRET_FILE=.local/secrets/auth_secret" in "\n".join(readme_walk(1))


def run_walk(lines: list[str], connects) -> dict[str, str]:
    """Each line in bash after the ones before it (they export PATH and set variables); line -> its stdout."""
    lines = [line.replace(DEFAULT_GRPC, connects.target).replace(DEFAULT_METRICS,
                                                                 f"127.0.0.1:{connects.metrics_port}")
             for line in lines]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADSMON_")}
    outputs = []
    for i in range(len(lines)):
        # Each line runs after the ones before it (they export PATH and the secret, set TOKEN).
        script = "set -euo pipefail\n" + "\n".join(f"{line} >/dev/null" for line in lines[:i]) + f"\n{lines[i]}\n"
        result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"README line {lines[i]!r} failed:\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        outputs.append(result.stdout)
    return dict(zip(lines, outputs, strict=True))


def test_every_line_of_the_readme_grpcurl_walk_runs_over_mutual_tls(launch):
    tls = ROOT / ".local" / "secrets" / "tls"
    assert (tls / "operator.crt").is_file(), "no .local/secrets/tls: run `make secrets` (make test does it)"
    connects = launch("connects", ADSMON_TRANSPORT="tls", ADSMON_TLS_DIR=str(tls))
    by_line = run_walk(readme_walk(), connects)
    listed = next(out for line, out in by_line.items() if line.endswith(" list"))
    assert {"adsmon.connects.v1.ConnectsService", "grpc.health.v1.Health"} <= set(listed.split())
    assert '"status": "SERVING"' in next(out for line, out in by_line.items() if "Health/Check" in line)
    balance = next(out for line, out in by_line.items() if "GetBalance" in line)
    assert '"account_id": "acct-1"' in balance
    metrics = next(out for line, out in by_line.items() if "/metrics" in line)
    assert 'grpc_code="OK",grpc_method="GetBalance"' in metrics


def test_the_readme_plaintext_lines_run_against_a_plaintext_suite(launch):
    secret = ROOT / ".local" / "secrets" / "auth_secret"
    assert secret.is_file(), "no .local/secrets/auth_secret: run `make secrets` (make test does it)"
    connects = launch("connects", ADSMON_AUTH_SECRET_FILE=str(secret))
    tools = [line for line in readme_walk() if "tools.sh" in line]  # grpcurl on PATH, as in the first block
    by_line = run_walk(tools + readme_walk(1), connects)
    balance = next(out for line, out in by_line.items() if "GetBalance" in line)
    assert '"account_id": "acct-1"' in balance

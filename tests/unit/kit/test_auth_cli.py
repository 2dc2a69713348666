"""`python -m services.kit.auth mint`: a token on stdout, or one stderr line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.kit.auth import Authenticator, main
from tests.conftest import ROOT

SECRET = b"s" * 40


def mint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ADSMON_")}
    return subprocess.run([sys.executable, "-m", "services.kit.auth", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=30)


def test_mint_prints_a_token_the_servers_accept_for_that_caller(tmp_path):
    secret = tmp_path / "auth_secret"
    secret.write_bytes(SECRET)
    out = mint({"ADSMON_AUTH_SECRET_FILE": str(secret)}, "mint", "operator")
    assert (out.returncode, out.stderr) == (0, "")
    assert Authenticator(SECRET).verify(f"Bearer {out.stdout.strip()}") == "operator"


@pytest.mark.parametrize(("env", "args", "line"), [
    ({}, ["mint", "operator"],
     "mint: missing setting ADSMON_AUTH_SECRET_FILE (the shared secret file, e.g. .local/secrets/auth_secret)"),
    ({"ADSMON_AUTH_SECRET_FILE": "/nonexistent/auth_secret"}, ["mint", "operator"],
     "mint: ADSMON_AUTH_SECRET_FILE: cannot read secret file (No such file or directory)"),
    ({"ADSMON_AUTH_SECRET": "short"}, ["mint", "operator"], "mint: ADSMON_AUTH_SECRET must be at least 32 bytes long"),
    ({"ADSMON_AUTH_SECRET": "s" * 40}, ["mint", "Not A Caller"],
     "mint: caller name 'Not A Caller' must match ^[a-z][a-z0-9-]{0,62}$"),
    ({"ADSMON_AUTH_SECRET": "s" * 40}, ["mint", "operator", "soon"],
     "mint: ttl_seconds must be a whole number of seconds, not 'soon'"),
    ({}, ["mint"], "usage: python -m services.kit.auth mint <caller> [ttl_seconds]"),
], ids=["missing secret", "unreadable secret file", "short secret", "bad caller", "bad ttl", "no caller"])
def test_a_missing_or_bad_setting_is_one_stderr_line_and_exit_code_2(monkeypatch, capsys, env, args, line):
    for key in [k for k in os.environ if k.startswith("ADSMON_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(args) == 2
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", line + "\n")


def test_the_module_entry_point_exits_2_without_a_traceback():
    out = mint({}, "mint", "operator")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "mint: missing setting ADSMON_AUTH_SECRET_FILE (the shared secret file, e.g. .local/secrets/auth_secret)"]

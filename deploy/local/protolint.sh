#!/usr/bin/env bash
# Lints the protos (called by `make lint`):
#   1. deploy/local/tools.sh install buf   (pinned; cached outside the repo)
#   2. buf lint                            (STANDARD + comment rules, protos/buf.yaml)
#   3. buf format -d --exit-code           (prints the diff and fails if unformatted)
#
# Fallback, only when buf cannot be installed (no Go toolchain on the
# machine): compile every proto with grpcio-tools' protoc (syntax, imports,
# types) and run a small style check (package matches directory, enum zero
# values end in _UNSPECIFIED). It says loudly that it fell back; set
# ADSMON_PROTOLINT_REQUIRE_BUF=1 to fail instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
PROTOS="$ROOT/protos"
TOOLS="$ROOT/deploy/local/tools.sh"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

log() { printf '[%s] protolint: %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }
die() { printf 'protolint.sh: error: %s\n' "$*" >&2; exit 1; }

[[ -f "$PROTOS/buf.yaml" ]] || die "$PROTOS/buf.yaml not found"

lint_with_buf() {
  local buf="$1" rc=0
  cd "$PROTOS"
  log "buf lint ($("$buf" --version))"
  "$buf" lint || rc=1
  log "buf format -d --exit-code"
  "$buf" format -d --exit-code || {
    rc=1
    log "fix formatting with: (cd protos && $buf format -w)"
  }
  [[ $rc -eq 0 ]] && log "protos OK"
  return "$rc"
}

lint_with_protoc() {
  [[ -x "$PYTHON" ]] || PYTHON="$(command -v python3 || true)"
  [[ -n "$PYTHON" ]] || die "neither buf nor python is available to check the protos"
  "$PYTHON" -c 'import grpc_tools' 2>/dev/null \
    || die "buf unavailable and grpcio-tools not installed in $PYTHON (run the project's venv setup)"
  log "FALLBACK: buf unavailable; protoc compile + basic style check only (not full buf STANDARD lint)"
  "$PYTHON" - "$PROTOS" <<'PY'
import os, re, sys, tempfile
from grpc_tools import protoc
import grpc_tools

root = sys.argv[1]
wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
files = sorted(
    os.path.relpath(os.path.join(d, f), root)
    for d, _, fs in os.walk(root) for f in fs if f.endswith(".proto")
)
errors = []
for rel in files:
    text = open(os.path.join(root, rel), encoding="utf-8").read()
    pkg = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
    want = os.path.dirname(rel).replace(os.sep, ".")
    if not pkg or pkg.group(1) != want:
        errors.append(f"{rel}: package should be {want!r} (PACKAGE_DIRECTORY_MATCH)")
    for m in re.finditer(r"enum\s+(\w+)\s*\{\s*(?://[^\n]*\n\s*)*(\w+)\s*=\s*0\s*;", text):
        enum, zero = m.groups()
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", enum).upper()
        if zero != f"{snake}_UNSPECIFIED":
            errors.append(f"{rel}: enum {enum} zero value should be {snake}_UNSPECIFIED")
with tempfile.TemporaryDirectory() as out:
    rc = protoc.main(["protoc", f"-I{root}", f"-I{wkt}", f"--descriptor_set_out={out}/all.binpb", *files])
if rc != 0:
    errors.append(f"protoc failed (exit {rc})")
for e in errors:
    print(e, file=sys.stderr)
print(f"protolint fallback: {len(files)} files, {len(errors)} problems", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
}

if "$TOOLS" install buf; then
  lint_with_buf "$("$TOOLS" path)/buf"
elif [[ "${ADSMON_PROTOLINT_REQUIRE_BUF:-0}" == 1 ]]; then
  die "buf could not be installed and ADSMON_PROTOLINT_REQUIRE_BUF=1"
else
  lint_with_protoc
fi

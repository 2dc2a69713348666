#!/usr/bin/env bash
# Installs the Go command-line tools the project uses (buf, grpcurl, ghz)
# from the Go module proxy, built with this machine's Go, at pinned versions.
#
#   tools.sh install [buf|grpcurl|ghz ...]   default: all; already-installed
#                                            tools at the pinned version are
#                                            skipped (idempotent)
#   tools.sh path                            print the bin dir
#
# The bin dir lives outside the repository (default ~/.cache/adsmon/bin,
# override with ADSMON_TOOLS_BIN) so CI reruns on the same machine reuse the
# binaries instead of compiling for minutes again. A stamp file per
# tool+version under <bin>/.stamps records a finished install; a binary
# without its stamp (interrupted build, older version) is rebuilt.
#
# Environment: ADSMON_TOOLS_BIN, GO (path to the go binary; default
# /usr/local/go/bin/go, else `go` on PATH). GOPATH/GOMODCACHE keep Go's
# defaults so the module cache is shared with other Go builds.
set -euo pipefail

# Pinned versions. Bump deliberately; the stamp makes the next run rebuild.
declare -A TOOL_MODULE=(
  [buf]="github.com/bufbuild/buf/cmd/buf"
  [grpcurl]="github.com/fullstorydev/grpcurl/cmd/grpcurl"
  [ghz]="github.com/bojand/ghz/cmd/ghz"
)
declare -A TOOL_VERSION=(
  [buf]="v1.75.0"
  [grpcurl]="v1.9.4"
  [ghz]="v0.121.0"
)
ALL_TOOLS=(buf grpcurl ghz)

BIN_DIR="${ADSMON_TOOLS_BIN:-$HOME/.cache/adsmon/bin}"
STAMP_DIR="$BIN_DIR/.stamps"

log() { printf '[%s] tools: %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }
die() { printf 'tools.sh: error: %s\n' "$*" >&2; exit 1; }

find_go() {
  if [[ -n "${GO:-}" ]]; then
    [[ -x "$GO" ]] || die "GO=$GO is not an executable go binary"
    printf '%s\n' "$GO"
  elif [[ -x /usr/local/go/bin/go ]]; then
    printf '%s\n' /usr/local/go/bin/go
  elif command -v go >/dev/null 2>&1; then
    command -v go
  else
    die "go not found (looked for /usr/local/go/bin/go and go on PATH); install Go 1.22+ to build buf/grpcurl/ghz"
  fi
}

stamp_of() { printf '%s/%s@%s\n' "$STAMP_DIR" "$1" "${TOOL_VERSION[$1]}"; }

is_installed() {
  [[ -x "$BIN_DIR/$1" && -f "$(stamp_of "$1")" ]]
}

install_one() { # install_one <tool> <go>
  local tool="$1" go="$2"
  local spec="${TOOL_MODULE[$tool]}@${TOOL_VERSION[$tool]}"
  if is_installed "$tool"; then
    log "$tool ${TOOL_VERSION[$tool]} already installed in $BIN_DIR"
    return 0
  fi
  log "installing $spec (compiles; can take minutes)"
  local start=$SECONDS
  # Drop the stamp first: a failed build must not leave an old stamp behind.
  rm -f "$STAMP_DIR/$tool@"*
  GOBIN="$BIN_DIR" GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" \
    "$go" install "$spec" || die "go install $spec failed"
  [[ -x "$BIN_DIR/$tool" ]] || die "go install $spec produced no $BIN_DIR/$tool"
  : >"$(stamp_of "$tool")"
  log "installed $tool ${TOOL_VERSION[$tool]} in $((SECONDS - start))s -> $BIN_DIR/$tool"
}

cmd_install() {
  local tools=("$@") tool go
  [[ ${#tools[@]} -gt 0 ]] || tools=("${ALL_TOOLS[@]}")
  for tool in "${tools[@]}"; do
    [[ -n "${TOOL_MODULE[$tool]:-}" ]] \
      || die "unknown tool '$tool' (known: ${ALL_TOOLS[*]})"
  done
  # Nothing to do: don't even require go (a machine with cached binaries).
  local missing=()
  for tool in "${tools[@]}"; do is_installed "$tool" || missing+=("$tool"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    for tool in "${tools[@]}"; do install_one "$tool" unused; done
    return 0
  fi
  go="$(find_go)"
  mkdir -p "$BIN_DIR" "$STAMP_DIR"
  # Serialise concurrent runs (e.g. make lint and make load at once) so two
  # builds don't race on the same binary and stamp.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$STAMP_DIR/.lock"
    flock 9
  fi
  for tool in "${tools[@]}"; do install_one "$tool" "$go"; done
}

usage() {
  local IFS='|'
  printf 'usage: %s install [%s ...] | path\n' "${0##*/}" "${ALL_TOOLS[*]}" >&2
  exit 2
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd="$1"; shift
  case "$cmd" in
    install) cmd_install "$@" ;;
    path) printf '%s\n' "$BIN_DIR" ;;
    -h|--help|help) usage ;;
    *) usage ;;
  esac
}

main "$@"

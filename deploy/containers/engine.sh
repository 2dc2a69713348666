# shellcheck shell=bash
# Container engine for deploy/containers/*.sh. Source it, do not run it.
#
#   ADSMON_CONTAINER_ENGINE  podman | docker (default: docker when its daemon answers, else podman)
#
# podman (this kind of machine): Debian's podman + runc, installed here if
# missing (apt, idempotent), configured by containers.conf beside this file
# (runc, explicit ulimits, host network) through CONTAINERS_CONF. Installed with their
# recommended packages, as tried on this kind of machine.
ADSMON_SVC="${ADSMON_SVC:-containers}"
# shellcheck source=../local/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../local/common.sh"
CT_DIR="$ADSMON_ROOT/deploy/containers"
CT_CACHE="$ADSMON_LOCAL/containers"

apt_install() { # apt_install <pkg>...: only the missing ones
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ "${#missing[@]}" -eq 0 ] && return 0
  is_root || die "missing packages ${missing[*]}: run as root or apt-get install them"
  info "installing ${missing[*]} (apt)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

detect_engine() {
  local engine="${ADSMON_CONTAINER_ENGINE:-}"
  if [ -z "$engine" ]; then
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then engine=docker; else engine=podman; fi
  fi
  case "$engine" in
    podman)
      apt_install podman runc
      export CONTAINERS_CONF="${CONTAINERS_CONF:-$CT_DIR/containers.conf}"
      CT_BUILD_FLAGS=(--network host --ulimit nofile=16384:16384 --ulimit nproc=4096:4096)
      ;;
    docker) CT_BUILD_FLAGS=(--network host) ;;
    *) die "ADSMON_CONTAINER_ENGINE=$engine: podman or docker" ;;
  esac
  CT_ENGINE="$engine"
  export ADSMON_CONTAINER_ENGINE="$engine"
}

image_exists() { "$CT_ENGINE" image inspect "$1" >/dev/null 2>&1; }

#!/usr/bin/env bash
# make images: the debootstrapped base, then the suite's image and local stand-ins
# for the official PostgreSQL, Kafka and Prometheus images (no registry here).
#
#   images.sh [all|base|python|services|postgres|kafka|prometheus]...
#
# Names (ADSMON_IMAGE_TAG, default local):
#   localhost/adsmon-base:bookworm       debootstrap --variant=minbase bookworm + import (once)
#   localhost/adsmon-python:3.11         Debian's python3.11 (PYTHON_IMAGE of deploy/docker/Dockerfile)
#   localhost/adsmon:$TAG                connects, ads, billing, the sandbox provider (non-root)
#   localhost/adsmon-postgres:15         Debian postgresql-15, official-image interface
#   localhost/adsmon-kafka:4.1.1         Java 17 + deploy/local/kafka.sh's Maven jars
#   localhost/adsmon-prometheus:local    Debian prometheus
# Layers are cached by the engine: after a code-only change only the services
# image's last layers (COPY services/ onwards) are rebuilt.
set -euo pipefail
ADSMON_SVC=images
# shellcheck source=engine.sh
. "$(dirname "${BASH_SOURCE[0]}")/engine.sh"
TAG="${ADSMON_IMAGE_TAG:-local}"
BASE=localhost/adsmon-base:bookworm
PYTHON=localhost/adsmon-python:3.11
MIRROR="${ADSMON_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

build() { # build <tag> <containerfile> <context> [args...]
  local tag="$1" file="$2" context="$3"; shift 3
  local started=$SECONDS log
  log="$CT_CACHE/build-$(basename "${tag%%:*}").log"
  mkdir -p "$CT_CACHE"
  "$CT_ENGINE" build "${CT_BUILD_FLAGS[@]}" --build-arg BASE_IMAGE="$BASE" -t "$tag" -f "$file" "$@" "$context" \
    >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "building $tag failed (log: $log)"; }
  info "$tag ($((SECONDS - started))s)"
}

img_base() {
  image_exists "$BASE" && return 0
  apt_install debootstrap
  local root="$CT_CACHE/rootfs.$$"
  mkdir -p "$CT_CACHE"
  rm -rf "$root"
  info "debootstrap --variant=minbase bookworm (about 30 s)"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$CT_CACHE/debootstrap.log" 2>&1 \
    || { rm -rf "$root"; tail -n 20 "$CT_CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | "$CT_ENGINE" import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$root"
  info "$BASE imported"
}

img_python() { img_base; build "$PYTHON" "$CT_DIR/python.Containerfile" "$CT_DIR"; }

img_services() {
  img_python
  local -a extra=(--build-arg PYTHON_IMAGE="$PYTHON" --ignorefile "$ADSMON_ROOT/deploy/docker/Dockerfile.dockerignore")
  if [ "$CT_ENGINE" = podman ]; then
    # No PyPI inside a build here: a wheelhouse made on the host, mounted read-only.
    local wheels="$CT_CACHE/wheels" lock_hash
    lock_hash="$(sha256sum "$ADSMON_ROOT/requirements.lock" | cut -c1-16)"
    if [ "$(cat "$wheels/.lock" 2>/dev/null)" != "$lock_hash" ]; then
      info "wheelhouse from requirements.lock (pip download)"
      mkdir -p "$wheels"
      "$ADSMON_ROOT/.venv/bin/python" -m pip download -q -r "$ADSMON_ROOT/requirements.lock" -d "$wheels" \
        || die "pip download -r requirements.lock failed"
      echo "$lock_hash" >"$wheels/.lock"
    fi
    extra+=(-v "$wheels:/wheels:ro")
  else
    extra=(--build-arg PYTHON_IMAGE="$PYTHON")  # docker reads Dockerfile.dockerignore itself
  fi
  build "localhost/adsmon:$TAG" "$ADSMON_ROOT/deploy/docker/Dockerfile" "$ADSMON_ROOT" "${extra[@]}"
}

img_postgres() { img_base; build localhost/adsmon-postgres:15 "$CT_DIR/postgres.Containerfile" "$CT_DIR"; }

img_kafka() {
  img_base
  "$ADSMON_ROOT/deploy/local/kafka.sh" install
  local version="${ADSMON_KAFKA_VERSION:-4.1.1}" ctx="$CT_CACHE/kafka-context"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp -al "$ADSMON_LOCAL/kafka/$version/libs" "$ctx/libs" 2>/dev/null || cp -a "$ADSMON_LOCAL/kafka/$version/libs" "$ctx/libs"
  cp "$CT_DIR/kafka-entrypoint.sh" "$ctx/"
  cp "$CT_DIR/kafka-log4j2.xml" "$ctx/log4j2.xml"
  build "localhost/adsmon-kafka:$version" "$CT_DIR/kafka.Containerfile" "$ctx"
}

img_prometheus() { img_base; build localhost/adsmon-prometheus:local "$CT_DIR/prometheus.Containerfile" "$CT_DIR"; }

detect_engine
[ "$#" -gt 0 ] || set -- all
for what in "$@"; do
  case "$what" in
    all) img_services; img_postgres; img_kafka; img_prometheus ;;
    base|python|services|postgres|kafka|prometheus) "img_$what" ;;
    *) die "unknown image $what" ;;
  esac
done

#!/usr/bin/env bash
# Build the local images immune:dev, immune-demo:dev and immune-nats:dev from
# binaries built on the host. Usage: scripts/images.sh [debug|release]
# (default release). Set IMMUNE_SKIP_CARGO=1 to reuse binaries already built.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
cd "$ROOT"

PROFILE="${1:-release}"
case "$PROFILE" in
    release) CARGO_FLAGS=(--release) ;;
    debug) CARGO_FLAGS=() ;;
    *) die "usage: $0 [debug|release]" ;;
esac

STAGES=(collector detector decider executor chaos)
# Built and shipped in the immune image beside the stages (binary and config alike).
PROGRAMS=("${STAGES[@]}" console)
PACKAGES=()
for s in "${PROGRAMS[@]}"; do PACKAGES+=(-p "immune-$s"); done
PACKAGES+=(-p immune-demo)
PACKAGES+=(-p immune-cli)   # the operator CLI `immune`, shipped in immune:dev

if [ "${IMMUNE_SKIP_CARGO:-0}" != 1 ]; then
    log "cargo build ${CARGO_FLAGS[*]} ${PACKAGES[*]}"
    cargo build "${CARGO_FLAGS[@]}" "${PACKAGES[@]}"
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN_DIR="$TARGET_DIR/$PROFILE"
CTX="$ROOT/target/image-context"

# The images run debian:bookworm-slim (glibc 2.36); host binaries linked
# against a newer glibc would not start there.
glibc="$(ldd --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+$' || true)"
if [ -n "$glibc" ] && ! version_ge 2.36 "$glibc"; then
    log "warning: host glibc $glibc is newer than bookworm's 2.36; the binaries may not start in the images"
fi

# Stage one small build context per image (never the repo root: target/ is huge).
stage_file() { # src dst [mode]
    [ -f "$1" ] || die "missing $1"
    mkdir -p "$(dirname "$2")"
    install -m "${3:-0644}" "$1" "$2"
}
rm -rf "$CTX"
for s in "${PROGRAMS[@]}"; do
    stage_file "$BIN_DIR/immune-$s" "$CTX/immune/bin/immune-$s" 0755
    stage_file "$ROOT/$s/$s.toml" "$CTX/immune/config/$s.toml"
done
stage_file "$BIN_DIR/immune" "$CTX/immune/bin/immune" 0755
stage_file "$BIN_DIR/immune-demo-service" "$CTX/demo/immune-demo-service" 0755

NATS_BIN="$(nats_real_binary)" || die "no nats-server binary found; run scripts/setup.sh"
stage_file "$NATS_BIN" "$CTX/nats/nats-server" 0755
stage_file "$ROOT/nats/nats-server.conf" "$CTX/nats/nats-server.conf"

# Without the buildx plugin, use the classic builder instead of failing.
if ! docker buildx version >/dev/null 2>&1; then export DOCKER_BUILDKIT=0; fi

build() { # tag dockerfile context
    log "docker build -t $1"
    local out
    # Quiet unless it fails (the classic builder prints a deprecation notice).
    if ! out="$(docker build -q -t "$1" -f "$ROOT/deploy/$2" "$CTX/$3" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "docker build of $1 failed"
    fi
    printf '%-18s %s\n' "$1" "$(docker image inspect -f '{{.Id}}' "$1")"
}
build immune:dev immune.Dockerfile immune
build immune-demo:dev demo.Dockerfile demo
build immune-nats:dev nats.Dockerfile nats

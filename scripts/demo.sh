#!/usr/bin/env bash
# One command on a fresh machine: build, start immune and the demo services,
# crash `orders` and follow immune healing it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
cd "$ROOT"

bash scripts/setup.sh
bash scripts/images.sh release

read -r -a COMPOSE <<<"$(compose_cmd)"
log "${COMPOSE[*]} up -d"
"${COMPOSE[@]}" up -d

# Wait (bounded) for NATS with JetStream and for every service to be running.
log "waiting for the services"
deadline=$((SECONDS + 90))
until curl -fsS --max-time 2 'http://127.0.0.1:8222/healthz?js-enabled-only=true' >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "nats did not become healthy; see: ${COMPOSE[*]} logs nats"
    sleep 1
done
services=(collector detector decider executor chaos console gateway orders payments auth loadgen)
for svc in "${services[@]}"; do
    while :; do
        id="$("${COMPOSE[@]}" ps -q "$svc" 2>/dev/null || true)"
        if [ -n "$id" ] && [ "$(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" = true ]; then break; fi
        [ "$SECONDS" -lt "$deadline" ] || die "$svc is not running; see: ${COMPOSE[*]} logs $svc"
        sleep 1
    done
done
# The demo services publish no ports; on Linux the host reaches container IPs.
for svc in gateway orders payments auth; do
    id="$("${COMPOSE[@]}" ps -q "$svc")"
    ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$id" | awk '{print $1}')"
    until curl -fsS --max-time 2 "http://$ip:8080/health" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then log "note: $svc health not reachable at $ip:8080 from the host"; break; fi
        sleep 1
    done
done
# Give the collector a few scrapes so the detector has a baseline.
sleep "${IMMUNE_DEMO_WARMUP:-10}"
"${COMPOSE[@]}" ps

log "injecting a crash into orders and following the incident (scripts/immune: the CLI, logged in as operator)"
scripts/immune chaos inject orders crash --for 30s --follow
scripts/immune status

cat <<MSG

The console:           http://127.0.0.1:8088/ (live services, incidents, audit, chaos buttons)
Status:                scripts/immune status
Follow the audit:      scripts/immune audit tail --service orders
Another fault:         scripts/immune chaos inject payments hang --for 30s --follow
Watch the decisions:   ${COMPOSE[*]} logs -f decider
Stop and clean up:     ${COMPOSE[*]} down -v
MSG

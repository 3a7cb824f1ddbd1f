#!/usr/bin/env bash
# WebSocket messages through kong-gateway, in one run on this machine, echoed by
# `ws-bench echo` (bench/src/bin/ws-bench.rs, one thread):
#   (a) the echo server directly,
#   (b) kong-gateway (one worker thread), an http service: the Upgrade is tunnelled as bytes,
#   (c) kong-gateway, a ws service: every message is read, passes the frame plugin ws-redact
#       (examples/src/ws_redact.rs) and is written again, both ways;
# for 64 B and 16 KiB text messages, one in flight per connection; then the gateway's memory
# with IDLE (10,000) idle ws sessions open through (c).
#
#   bash bench/ws.sh                                   # 10 s per run, 50 connections
#   SECS=30 CONNECTIONS=100 IDLE=5000 bash bench/ws.sh
#
# Ports are picked free; everything runs under a temporary directory removed at the end.
set -euo pipefail

SECS=${SECS:-10}
CONNECTIONS=${CONNECTIONS:-50}
IDLE=${IDLE:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# Each idle session holds two descriptors in the gateway (client and upstream).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
LIMIT=$(ulimit -n)
if [ $((IDLE * 2 + 256)) -gt "$LIMIT" ]; then
    IDLE=$(( (LIMIT - 256) / 2 ))
    echo "the open-files limit is $LIMIT: measuring $IDLE idle sessions" >&2
fi

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
ECHO=$(free_port); KONG=$(free_port)

echo "building kong-gateway and ws-bench (release)" >&2
(cd "$ROOT" && cargo build --release -q -p kong-pdk-examples --bin kong-gateway \
    && cargo build --release -q -p kong-pdk-bench --bin ws-bench)
GATEWAY="$ROOT/target/release/kong-gateway"
BENCH="$ROOT/target/release/ws-bench"

mkdir -p "$WORK/kong"
cat > "$WORK/kong/kong.yml" <<EOF2
_format_version: "3.0"
services:
  - name: tunnel
    url: http://127.0.0.1:$ECHO
    routes:
      - name: tunnel
        paths: ["/tunnel"]
  - name: frames
    url: ws://127.0.0.1:$ECHO
    routes:
      - name: frames
        protocols: ["ws"]
        paths: ["/ws"]
    plugins:
      - name: ws-redact
EOF2
cat > "$WORK/kong/kong.conf" <<EOF2
proxy_listen = 127.0.0.1:$KONG
admin_listen = off
database = off
declarative_config = $WORK/kong/kong.yml
plugins = bundled,ws-redact
prefix = $WORK/kong/prefix
nginx_worker_processes = 1
log_level = error
EOF2

"$BENCH" echo "127.0.0.1:$ECHO" & PIDS+=($!)
"$GATEWAY" start -c "$WORK/kong/kong.conf" >"$WORK/kong/out.log" 2>&1 & PIDS+=($!)
GW_PID=${PIDS[1]}
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$KONG/" 2>/dev/null && break
    sleep 0.1
done

rss_kib() { awk '/^VmRSS:/ { print $2 }' /proc/"$1"/status; }

# Warm-up.
"$BENCH" load "ws://127.0.0.1:$KONG/ws" "$CONNECTIONS" 64 2 >/dev/null
"$BENCH" load "ws://127.0.0.1:$KONG/tunnel" "$CONNECTIONS" 64 2 >/dev/null

ROWS=""
for size in 64 16384; do
    read -r A_MPS A_P99 A_ERR < <("$BENCH" load "ws://127.0.0.1:$ECHO/" "$CONNECTIONS" "$size" "$SECS")
    read -r B_MPS B_P99 B_ERR < <("$BENCH" load "ws://127.0.0.1:$KONG/tunnel" "$CONNECTIONS" "$size" "$SECS")
    read -r C_MPS C_P99 C_ERR < <("$BENCH" load "ws://127.0.0.1:$KONG/ws" "$CONNECTIONS" "$size" "$SECS")
    for e in "$A_ERR" "$B_ERR" "$C_ERR"; do
        [ "$e" = 0 ] || echo "errors during the $size B runs: $A_ERR $B_ERR $C_ERR" >&2
    done
    ROWS+=$(printf '| %s B | (a) echo server directly | %.0f | %s | |' "$size" "$A_MPS" "$A_P99")$'\n'
    ROWS+=$(printf '| %s B | (b) http service, tunnel | %.0f | %s | 1.00 |' "$size" "$B_MPS" "$B_P99")$'\n'
    ROWS+=$(printf '| %s B | (c) ws service, ws-redact on every message | %.0f | %s | %.2f |' "$size" "$C_MPS" "$C_P99" \
        "$(awk -v c="$C_MPS" -v b="$B_MPS" 'BEGIN { print c / b }')")$'\n'
done

BEFORE=$(rss_kib "$GW_PID")
"$BENCH" idle "ws://127.0.0.1:$KONG/ws" "$IDLE" >"$WORK/idle.out" 2>&1 & PIDS+=($!)
for _ in $(seq 1 600); do
    grep -q '^open$' "$WORK/idle.out" && break
    sleep 0.1
done
grep -q '^open$' "$WORK/idle.out" || { echo "the idle sessions did not open:" >&2; cat "$WORK/idle.out" >&2; exit 1; }
sleep 1
AFTER=$(rss_kib "$GW_PID")

printf '\nws-bench load, %s connections, %s s per run, %s cores\n\n' "$CONNECTIONS" "$SECS" "$(nproc)"
printf '| message | target | round trips/s | p99 (ms) | vs (b) |\n|---|---|---|---|---|\n'
printf '%s' "$ROWS"
printf '\n| idle ws sessions through (c) | gateway RSS before | after | per session |\n|---|---|---|---|\n'
printf '| %s | %s KiB | %s KiB | %.1f KiB |\n' "$IDLE" "$BEFORE" "$AFTER" "$(awk -v a="$AFTER" -v b="$BEFORE" -v n="$IDLE" 'BEGIN { print (a - b) / n }')"

#!/usr/bin/env bash
# Stream proxying, in one run on this machine (issue 17): a TCP echo server (stream-bench echo,
# one thread) reached
#   (a) directly,
#   (b) through nginx's stream proxy (proxy_pass, one worker),
#   (c) through kong-gateway's stream_listen (one worker thread, DB-less, a tcp route by
#       destination port, no plugins),
# with two loads (bench/src/bin/stream-bench.rs): `bulk` (CONNECTIONS connections each sending
# MESSAGE bytes and reading the echo, again and again: MiB/s each way) and `connect` (CONNECTIONS
# loops of connect, 64 bytes there and back, close: sessions/s and p99). Prints the server's
# CPU time per MiB or per 1,000 sessions too, and (c)/(b).
#
#   bash bench/stream.sh
#   SECONDS_PER_RUN=20 CONNECTIONS=32 MESSAGE=65536 bash bench/stream.sh
#
# Installs nginx with its stream module (Debian packages) when missing.
set -euo pipefail

SECS=${SECONDS_PER_RUN:-10}
CONNECTIONS=${CONNECTIONS:-16}
MESSAGE=${MESSAGE:-1048576}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
if ! command -v nginx >/dev/null 2>&1 || [ ! -f "$STREAM_MODULE" ]; then
    echo "installing nginx-light libnginx-mod-stream" >&2
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get install -y -q nginx-light libnginx-mod-stream >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
UP=$(free_port); NGX=$(free_port); KONG=$(free_port); KONG_HTTP=$(free_port)

echo "building kong-gateway and stream-bench (release)" >&2
(cd "$ROOT" && cargo build --release -q -p kong-pdk-examples --bin kong-gateway \
    && cargo build --release -q -p kong-pdk-bench --bin stream-bench)
GATEWAY="$ROOT/target/release/kong-gateway"
BENCH="$ROOT/target/release/stream-bench"

mkdir -p "$WORK/nginx/logs" "$WORK/kong"
cat > "$WORK/nginx/nginx.conf" <<NGINX_CONF
load_module $STREAM_MODULE;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log error;
events { worker_connections 20000; }
stream {
    upstream echo { server 127.0.0.1:$UP; }
    server { listen 127.0.0.1:$NGX; proxy_pass echo; }
}
NGINX_CONF
cat > "$WORK/kong/kong.yml" <<KONG_YML
_format_version: "3.0"
services:
  - name: echo
    url: tcp://127.0.0.1:$UP
    routes:
      - name: echo
        protocols: ["tcp"]
        destinations: [{ port: $KONG }]
KONG_YML
cat > "$WORK/kong/kong.conf" <<KONG_CONF
proxy_listen = 127.0.0.1:$KONG_HTTP
stream_listen = 127.0.0.1:$KONG
admin_listen = off
database = off
declarative_config = $WORK/kong/kong.yml
prefix = $WORK/kong/prefix
nginx_worker_processes = 1
log_level = error
KONG_CONF

"$BENCH" echo "127.0.0.1:$UP" & PIDS+=($!)
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' & PIDS+=($!)
"$GATEWAY" start -c "$WORK/kong/kong.conf" >"$WORK/kong/out.log" 2>&1 & PIDS+=($!)
for port in "$UP" "$NGX" "$KONG"; do
    for _ in $(seq 1 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
        sleep 0.1
    done
done

ticks() { cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{ t += $14 + $15 } END { print t }'; }
HZ=$(getconf CLK_TCK)
NGX_WORKER=$(pgrep -P "${PIDS[1]}" | head -1)

# Prints "<figure> <p99 or -> <cpu ms per unit>" for one load ($1: bulk|connect) against port
# $2, charging the CPU time of process $3 ("-" for none). The unit is a MiB for bulk, 1,000
# sessions for connect.
run() {
    local out t0 t1 figure units p99
    t0=$([ "$3" = - ] && echo 0 || ticks "$3")
    if [ "$1" = bulk ]; then
        out=$("$BENCH" bulk "127.0.0.1:$2" "$CONNECTIONS" "$SECS" "$MESSAGE")
        figure=$(awk '{print $1}' <<<"$out")
        units=$(awk -v f="$figure" -v s="$SECS" 'BEGIN { print f * s }')
        p99=-
    else
        out=$("$BENCH" connect "127.0.0.1:$2" "$CONNECTIONS" "$SECS")
        figure=$(awk '{print $1}' <<<"$out")
        units=$(awk -v f="$figure" -v s="$SECS" 'BEGIN { print f * s / 1000 }')
        p99=$(awk '{print $4}' <<<"$out")
    fi
    t1=$([ "$3" = - ] && echo 0 || ticks "$3")
    echo "$figure $p99 $(awk -v t="$((t1 - t0))" -v hz="$HZ" -v u="$units" 'BEGIN { printf "%.2f", (u > 0 ? t / hz * 1000 / u : 0) }')"
}

# Warm-up.
"$BENCH" connect "127.0.0.1:$KONG" 4 1 >/dev/null
"$BENCH" connect "127.0.0.1:$NGX" 4 1 >/dev/null

read -r A_BULK _ _ < <(run bulk "$UP" -)
read -r B_BULK _ B_BULK_CPU < <(run bulk "$NGX" "$NGX_WORKER")
read -r C_BULK _ C_BULK_CPU < <(run bulk "$KONG" "${PIDS[2]}")
read -r A_CONN A_P99 _ < <(run connect "$UP" -)
read -r B_CONN B_P99 B_CONN_CPU < <(run connect "$NGX" "$NGX_WORKER")
read -r C_CONN C_P99 C_CONN_CPU < <(run connect "$KONG" "${PIDS[2]}")

echo
echo "stream proxying, $CONNECTIONS connections, ${SECS}s per run, $MESSAGE-byte messages"
echo
echo "| | bulk MiB/s each way | server CPU ms/MiB | sessions/s (64 B, connect/close) | p99 ms | server CPU ms/1000 sessions |"
echo "|---|---|---|---|---|---|"
echo "| (a) direct | $A_BULK | | $A_CONN | $A_P99 | |"
echo "| (b) nginx stream | $B_BULK | $B_BULK_CPU | $B_CONN | $B_P99 | $B_CONN_CPU |"
echo "| (c) kong-gateway | $C_BULK | $C_BULK_CPU | $C_CONN | $C_P99 | $C_CONN_CPU |"
echo
awk -v c="$C_BULK" -v b="$B_BULK" -v cc="$C_CONN" -v bc="$B_CONN" \
    'BEGIN { printf "(c)/(b): bulk %.2f, sessions %.2f\n", c / b, cc / bc }'

#!/usr/bin/env bash
# Counts kong-gateway's heap allocations per request (calls into mimalloc's malloc and realloc,
# through perf uprobes) on four routes of bench/http.sh: (c) my-plugin, (h) proxy-cache hits,
# (g) the chain key-auth + rate-limiting + correlation-id + response-transformer and (i)
# my-plugin + http-log (one POST per entry, sent from the same process). Each route
# gets REQUESTS requests on one keep-alive connection after a warm-up. A count does not depend
# on the machine's load, so one run tells a change apart from its base.
#
#   sudo bash bench/allocs.sh                          # this build
#   COMPARE=/path/to/other/kong-gateway sudo bash bench/allocs.sh
#
# Needs perf (Debian: linux-perf) and the right to place uprobes (root).
set -euo pipefail

REQUESTS=${REQUESTS:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
command -v perf >/dev/null || { echo "bench/allocs.sh needs perf (Debian: linux-perf)" >&2; exit 1; }

(cd "$ROOT" && cargo build --release -q -p kong-pdk-examples --bin kong-gateway)
MOCK=$(free_port)
cat > "$WORK/kong.yml" <<YML
_format_version: "3.0"
services:
  - name: mock
    url: http://127.0.0.1:$MOCK
    routes:
      - { name: mock, paths: ["/mock"], plugins: [{ name: my-plugin }] }
      - name: cached
        paths: ["/cached"]
        plugins: [{ name: proxy-cache, config: { strategy: memory } }]
      - name: limited
        paths: ["/limited"]
        plugins:
          - name: key-auth
          - { name: rate-limiting, config: { minute: 1000000000, policy: local } }
          - name: correlation-id
          - { name: response-transformer, config: { add: { headers: ["X-Transformed:yes"] } } }
      - name: logged
        paths: ["/logged"]
        plugins:
          - name: my-plugin
          - { name: http-log, config: { http_endpoint: "http://127.0.0.1:$MOCK/post" } }
consumers:
  - username: bench
    keyauth_credentials: [{ key: bench-key }]
YML

# The upstream: the mock upstream of another kong-gateway process, so that its allocations
# are not counted.
mkdir -p "$WORK/upstream"
cat > "$WORK/upstream/kong.conf" <<CONF
proxy_listen = 127.0.0.1:$(free_port)
admin_listen = off
database = off
prefix = $WORK/upstream/prefix
mock_upstream = 127.0.0.1:$MOCK
log_level = error
CONF
"$ROOT/target/release/kong-gateway" start -c "$WORK/upstream/kong.conf" >"$WORK/upstream/out.log" 2>&1 &
PIDS+=($!)

# Prints one line per route for the gateway binary $1, labelled $2.
count() {
    local bin=$1 name=$2 port group
    port=$(free_port)
    group="kg$RANDOM"
    gateway_conf "$WORK/$group" "$port" "$WORK/kong.yml"
    "$bin" start -c "$WORK/$group/kong.conf" >"$WORK/$group/out.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/mock/anything" 2>/dev/null && break
        sleep 0.1
    done
    perf probe -q -x "$bin" --add "kongalloc:$group=mi_malloc_aligned" --add "kongalloc:${group}r=mi_realloc_aligned" 2>/dev/null \
        || { echo "cannot place uprobes on $bin (root? perf_event_paranoid?)" >&2; exit 1; }
    local route
    for route in mock cached limited logged; do
        local urls=() outs=()
        for _ in $(seq 1 "$REQUESTS"); do
            urls+=("http://127.0.0.1:$port/$route/anything")
            outs+=(-o /dev/null)
        done
        # Warm-up: the first requests fill the caches (the proxy-cache entry, the credential).
        curl -fsS -H 'apikey: bench-key' "${urls[@]:0:4}" >/dev/null
        perf stat -x, -e "kongalloc:$group" -e "kongalloc:${group}r" -p "$pid" \
            -o "$WORK/$group/$route.stat" -- sleep 60 &
        local stat=$!
        sleep 0.5
        curl -fsS -H 'apikey: bench-key' "${outs[@]}" "${urls[@]}"
        sleep 0.2
        kill -INT "$stat"
        wait "$stat" 2>/dev/null || true
        awk -F, -v n="$REQUESTS" -v who="$name" -v r="$route" \
            '$1 ~ /^[0-9]+$/ { sum += $1 } END { printf "%-28s %-8s %6.1f allocations per request\n", who, r, sum / n }' \
            "$WORK/$group/$route.stat"
    done
    perf probe -q -d "kongalloc:$group*" 2>/dev/null || true
}

count "$ROOT/target/release/kong-gateway" "kong-gateway (this build)"
[ -z "${COMPARE:-}" ] || count "$COMPARE" "kong-gateway (COMPARE)"

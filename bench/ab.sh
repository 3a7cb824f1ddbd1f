#!/usr/bin/env bash
# A/B of two kong-gateway builds, side by side: both run at once against one nginx upstream
# (`return 200`), and wrk (-t1 -c50) drives them in turn, ROUNDS times, the order of the pair
# swapped every round. Prints each run's req/s and the server's CPU time per request, then the
# means. On a shared 2-core machine req/s drifts between rounds by more than most changes are
# worth; the swapped order and the CPU per request (from /proc/<pid>/stat) tell a change
# apart from that drift. Run it twice with A and B exchanged: the process started later tends
# to do better here.
#
#   A=/path/to/base/kong-gateway B=target/release/kong-gateway bash bench/ab.sh
#   ROUTE=chain ROUNDS=8 DURATION=5s A=... B=... bash bench/ab.sh
#
# ROUTE: `mock` (my-plugin, row (c) of bench/http.sh) or `chain` (key-auth + rate-limiting +
# correlation-id + response-transformer, row (g)).
set -euo pipefail

A=${A:?A=<kong-gateway binary>}
B=${B:?B=<kong-gateway binary>}
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-5s}
ROUTE=${ROUTE:-mock}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "bench/ab.sh needs $tool (bench/http.sh installs it)" >&2; exit 1; }
done

UP=$(free_port)
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$UP;
        keepalive_requests 1000000;
        location / { return 200 "hello world"; }
    }
}
CONF
nginx -c "$WORK/nginx.conf" &
PIDS+=($!)
cat > "$WORK/kong.yml" <<YML
_format_version: "3.0"
services:
  - name: mock
    url: http://127.0.0.1:$UP
    routes:
      - { name: mock, paths: ["/mock"], plugins: [{ name: my-plugin }] }
      - name: chain
        paths: ["/chain"]
        plugins:
          - name: key-auth
          - { name: rate-limiting, config: { minute: 1000000000, policy: local } }
          - name: correlation-id
          - { name: response-transformer, config: { add: { headers: ["X-Transformed:yes"] } } }
consumers:
  - username: bench
    keyauth_credentials: [{ key: bench-key }]
YML

PORT_A=$(free_port)
PORT_B=$(free_port)
gateway_conf "$WORK/a" "$PORT_A" "$WORK/kong.yml"
gateway_conf "$WORK/b" "$PORT_B" "$WORK/kong.yml"
"$A" start -c "$WORK/a/kong.conf" >"$WORK/a/out.log" 2>&1 &
PID_A=$!
PIDS+=("$PID_A")
"$B" start -c "$WORK/b/kong.conf" >"$WORK/b/out.log" 2>&1 &
PID_B=$!
PIDS+=("$PID_B")
for port in "$PORT_A" "$PORT_B"; do
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null -H 'apikey: bench-key' "http://127.0.0.1:$port/$ROUTE/x" 2>/dev/null && break
        sleep 0.1
    done
done

# CPU ticks (user + system) of a process.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# One wrk run against side $1 (pid $2, port $3): a line "side req/s µs-per-request".
run() {
    local before after out
    before=$(ticks "$2")
    out=$(wrk -t1 -c50 -d"$DURATION" -H 'apikey: bench-key' "http://127.0.0.1:$3/$ROUTE/x")
    after=$(ticks "$2")
    echo "$out" | awk -v side="$1" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" '
        /requests in/ { n = $1 }
        /Requests\/sec/ { rps = $2 }
        END { printf "%s %.0f %.1f\n", side, rps, t * 1e6 / hz / n }'
}

echo "route $ROUTE, wrk -t1 -c50 -d$DURATION, $ROUNDS rounds; A=$A B=$B"
for i in $(seq 1 "$ROUNDS"); do
    if [ $((i % 2)) = 1 ]; then
        run A "$PID_A" "$PORT_A"
        run B "$PID_B" "$PORT_B"
    else
        run B "$PID_B" "$PORT_B"
        run A "$PID_A" "$PORT_A"
    fi
done | tee "$WORK/runs" | awk '{ printf "%s %9s req/s %7s µs CPU/request\n", $1, $2, $3 }'
awk '{ rps[$1] += $2; cpu[$1] += $3; n[$1]++ }
    END { for (s in n) printf "%s mean: %.0f req/s, %.1f µs CPU/request\n", s, rps[s] / n[s], cpu[s] / n[s] }' \
    "$WORK/runs" | sort

#!/usr/bin/env bash
# Drives wrk, in one run on this machine, against:
#   (a) nginx serving the upstream response itself,
#   (b) nginx proxy_pass to (a) with upstream keep-alive, one worker,
#   (c) kong-gateway with one worker thread proxying to (a), my-plugin on the route;
#   (d) tcp-relay (bench/src/bin): one thread of tokio copying bytes between each client
#       connection and a connection of its own to (a), no HTTP work at all. It is the floor
#       of any proxy on tokio: the same reads and writes per request as (c);
#   (f) kong-gateway as (c), on a route with key-auth + acl (a consumer's key, its group);
#   (g) kong-gateway as (c), on a route with key-auth + rate-limiting (local policy, a limit
#       never reached: every request is counted and gets the RateLimit headers) +
#       correlation-id + response-transformer (a response header added);
#   (h) kong-gateway as (c), on a route with proxy-cache (memory): every request but the
#       first is a hit, answered without the upstream;
#   (i) kong-gateway as (c), on a route with my-plugin + http-log to (a) (Kong's default
#       queue: one entry per POST), and (j) the same with batches (max_batch_size 1000);
#   (k) another kong-gateway process, as (c) but with prometheus on globally (every metric
#       switch on), run alternately with (c) ROUNDS times: the cost of the plugin;
#   (l) kong-gateway, no plugin, a service straight at (a); (m) the same through an upstream
#       entity with round-robin over four targets (four ports of (a)); (n) through an upstream
#       with consistent-hashing on a header; run alternately ROUNDS times: the balancer's cost;
# and the rows of the performance issue, each beside its peers (nginx, and HAProxy as a second
# peer):
#   (o) 1,000 connections (wrk -c1000) against (b), HAProxy and (c);
#   (p) 2 workers each: nginx with 2 worker processes, kong-gateway with 2 worker threads,
#       wrk -t2 -c100;
#   (q) HTTPS (TLS 1.3, keep-alive) against nginx with ssl and kong-gateway's ssl listener;
#   (r) HTTP/2 over TLS (h2load, 5 connections x 10 streams) against the same two;
#   (s) HAProxy, 1 thread, keep-alive to (a), as (b);
#   memory: kong-gateway's RSS idle after start, and the RSS each idle keep-alive client
#   connection adds (1,000 of them, each after one proxied request), beside nginx and HAProxy;
# then prints req/s, p99 latency, the server's CPU time per request and the ratio to nginx's
# proxy.
#
#   bash bench/http.sh                       # 10 s per run, 50 connections
#   DURATION=30s CONNECTIONS=100 bash bench/http.sh
#   COMPARE=/path/to/other/kong-gateway bash bench/http.sh
#
# COMPARE adds (e), another build of kong-gateway with the same configuration, and runs (c)
# and (e), then (f) on both, alternately ROUNDS times (default 3), the order of each pair
# swapped every round, so a change is measured against its base in one run on one machine.
# bench/ab.sh does the same for two builds alone, with the CPU per request of each.
#
# Installs wrk and nginx (Debian packages) when missing. Ports are picked free; everything
# runs under a temporary directory that is removed at the end.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

need() { command -v "$1" >/dev/null 2>&1 || NEED+=("$2"); }
NEED=()
need wrk wrk
need nginx nginx-light
need haproxy haproxy
need h2load nghttp2-client
if [ ${#NEED[@]} -gt 0 ]; then
    echo "installing ${NEED[*]}" >&2
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get install -y -q "${NEED[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
UP=$(free_port); NGX=$(free_port); KONG=$(free_port); RELAY=$(free_port); BASE=$(free_port)
PROM=$(free_port); PROM_ADMIN=$(free_port)
UP2=$(free_port); UP3=$(free_port); UP4=$(free_port)
NGX2=$(free_port); KONG2=$(free_port); NGX_TLS=$(free_port); KONG_TLS=$(free_port); HAP=$(free_port)
# (o) holds 1,000 client connections and as many upstream ones.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
COMPARE=${COMPARE:-}
ROUNDS=${ROUNDS:-3}

echo "building kong-gateway (release)" >&2
(cd "$ROOT" && cargo build --release -q -p kong-pdk-examples --bin kong-gateway \
    && cargo build --release -q -p kong-pdk-bench --bin tcp-relay)
GATEWAY="$ROOT/target/release/kong-gateway"

# The upstream's answer: a small JSON body, as the mock upstream's /anything gives.
BODY='{"message":"hello from the upstream","vars":{"uri":"/anything"}}'
mkdir -p "$WORK/nginx-up" "$WORK/nginx-proxy" "$WORK/nginx-proxy2" "$WORK/kong" "$WORK/kong2" "$WORK/haproxy" "$WORK/tls"
# (q) and (r): one self-signed certificate for both servers.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
cat > "$WORK/nginx-up/nginx.conf" <<EOF
worker_processes 1;
error_log stderr error;
pid $WORK/nginx-up/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    # (i) and (j) post their logs here: batches of a thousand entries exceed nginx's 1m.
    client_max_body_size 0;
    server {
        listen 127.0.0.1:$UP reuseport backlog=16384;
        # (m) and (n): the same server as four targets.
        listen 127.0.0.1:$UP2 reuseport backlog=16384;
        listen 127.0.0.1:$UP3 reuseport backlog=16384;
        listen 127.0.0.1:$UP4 reuseport backlog=16384;
        location / { default_type application/json; return 200 '$BODY'; }
    }
}
EOF
cat > "$WORK/nginx-proxy/nginx.conf" <<EOF
worker_processes 1;
error_log stderr error;
pid $WORK/nginx-proxy/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$UP; keepalive 512; }
    server {
        listen 127.0.0.1:$NGX reuseport backlog=16384;
        listen 127.0.0.1:$NGX_TLS ssl http2 reuseport backlog=16384;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_protocols TLSv1.3;
        location /mock/ {
            proxy_pass http://up/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            add_header X-MyPlugin response;
        }
    }
}
EOF
# (p): the same proxy with two worker processes.
sed -e 's/^worker_processes 1;/worker_processes 2;/' -e "s|$WORK/nginx-proxy/|$WORK/nginx-proxy2/|" \
    -e "s|127.0.0.1:$NGX reuseport|127.0.0.1:$NGX2 reuseport|" -e "/127.0.0.1:$NGX_TLS/d" \
    "$WORK/nginx-proxy/nginx.conf" > "$WORK/nginx-proxy2/nginx.conf"
# (s): HAProxy as (b): one thread, keep-alive to (a), the prefix stripped, the header added.
cat > "$WORK/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend proxy
    bind 127.0.0.1:$HAP
    default_backend up
backend up
    http-request set-path "%[path,regsub(^/mock/,/)]"
    http-response set-header X-MyPlugin response
    server a 127.0.0.1:$UP
EOF
cat > "$WORK/kong/kong.yml" <<EOF
_format_version: "3.0"
services:
  - name: upstream
    url: http://127.0.0.1:$UP
    routes:
      - name: mock
        paths: ["/mock"]
        plugins:
          - name: my-plugin
      - name: auth
        paths: ["/auth"]
        plugins:
          - name: key-auth
          - name: acl
            config: { allow: ["bench"] }
      - name: limited
        paths: ["/limited"]
        plugins:
          - name: key-auth
          - name: rate-limiting
            config: { minute: 1000000000, policy: local }
          - name: correlation-id
          - name: response-transformer
            config: { add: { headers: ["X-Transformed:yes"] } }
      - name: cached
        paths: ["/cached"]
        plugins:
          - name: proxy-cache
            config: { strategy: memory }
      - name: logged
        paths: ["/logged"]
        plugins:
          - name: my-plugin
          - name: http-log
            config: { http_endpoint: "http://127.0.0.1:$UP/log" }
      - name: batched
        paths: ["/batched"]
        plugins:
          - name: my-plugin
          - name: http-log
            config:
              http_endpoint: "http://127.0.0.1:$UP/log"
              queue: { max_batch_size: 1000, max_coalescing_delay: 1 }
  - name: single
    url: http://127.0.0.1:$UP
    routes:
      - name: single
        paths: ["/single"]
  - name: round-robin
    host: rr.bench
    routes:
      - name: rr
        paths: ["/rr"]
  - name: hashed
    host: hash.bench
    routes:
      - name: hash
        paths: ["/hash"]
upstreams:
  - name: rr.bench
    targets:
      - target: 127.0.0.1:$UP
      - target: 127.0.0.1:$UP2
      - target: 127.0.0.1:$UP3
      - target: 127.0.0.1:$UP4
  - name: hash.bench
    hash_on: header
    hash_on_header: x-user
    targets:
      - target: 127.0.0.1:$UP
      - target: 127.0.0.1:$UP2
      - target: 127.0.0.1:$UP3
      - target: 127.0.0.1:$UP4
consumers:
  - username: bench
    keyauth_credentials:
      - key: bench-key
    acls:
      - group: bench
EOF
cat > "$WORK/kong/kong.conf" <<EOF
proxy_listen = 127.0.0.1:$KONG, 127.0.0.1:$KONG_TLS ssl http2
ssl_cert = $WORK/tls/cert.pem
ssl_cert_key = $WORK/tls/key.pem
admin_listen = off
database = off
declarative_config = $WORK/kong/kong.yml
plugins = bundled,my-plugin
prefix = $WORK/kong/prefix
nginx_worker_processes = 1
log_level = error
EOF

"$NGINX" -p "$WORK/nginx-up" -c "$WORK/nginx-up/nginx.conf" -g 'daemon off;' & PIDS+=($!)
"$NGINX" -p "$WORK/nginx-proxy" -c "$WORK/nginx-proxy/nginx.conf" -g 'daemon off;' & PIDS+=($!)
"$GATEWAY" start -c "$WORK/kong/kong.conf" >"$WORK/kong/out.log" 2>&1 & PIDS+=($!)
"$ROOT/target/release/tcp-relay" "127.0.0.1:$RELAY" "127.0.0.1:$UP" & PIDS+=($!)
"$NGINX" -p "$WORK/nginx-proxy2" -c "$WORK/nginx-proxy2/nginx.conf" -g 'daemon off;' & NGX2_PID=$!; PIDS+=($!)
haproxy -f "$WORK/haproxy/haproxy.cfg" -db >"$WORK/haproxy/out.log" 2>&1 & HAP_PID=$!; PIDS+=($!)
# (p): kong-gateway with two worker threads, the same configuration.
sed -e "s|^proxy_listen = .*|proxy_listen = 127.0.0.1:$KONG2|" -e "s|$WORK/kong/prefix|$WORK/kong2/prefix|" \
    -e "s|^nginx_worker_processes = 1|nginx_worker_processes = 2|" "$WORK/kong/kong.conf" > "$WORK/kong2/kong.conf"
"$GATEWAY" start -c "$WORK/kong2/kong.conf" >"$WORK/kong2/out.log" 2>&1 & KONG2_PID=$!; PIDS+=($!)
if [ -n "$COMPARE" ]; then
    mkdir -p "$WORK/base"
    # The other build serves (c)'s and (f)'s routes only: its plugins may differ from this
    # build's.
    cat > "$WORK/base/kong.yml" <<EOF2
_format_version: "3.0"
services:
  - name: upstream
    url: http://127.0.0.1:$UP
    routes:
      - name: mock
        paths: ["/mock"]
        plugins:
          - name: my-plugin
      - name: auth
        paths: ["/auth"]
        plugins:
          - name: key-auth
          - name: acl
            config: { allow: ["bench"] }
consumers:
  - username: bench
    keyauth_credentials:
      - key: bench-key
    acls:
      - group: bench
EOF2
    sed -e "s|^proxy_listen = .*|proxy_listen = 127.0.0.1:$BASE|" -e "s|$WORK/kong/prefix|$WORK/base/prefix|" \
        -e "s|$WORK/kong/kong.yml|$WORK/base/kong.yml|" "$WORK/kong/kong.conf" > "$WORK/base/kong.conf"
    "$COMPARE" start -c "$WORK/base/kong.conf" >"$WORK/base/out.log" 2>&1 & BASE_PID=$!; PIDS+=($!)
fi
# (k): this build with the same routes and prometheus on globally.
mkdir -p "$WORK/prom"
cp "$WORK/kong/kong.yml" "$WORK/prom/kong.yml"
cat >> "$WORK/prom/kong.yml" <<EOF
plugins:
  - name: prometheus
    config:
      per_consumer: true
      status_code_metrics: true
      latency_metrics: true
      bandwidth_metrics: true
      upstream_health_metrics: true
EOF
sed -e "s|^proxy_listen = .*|proxy_listen = 127.0.0.1:$PROM|" -e "s|$WORK/kong/prefix|$WORK/prom/prefix|" \
    -e "s|$WORK/kong/kong.yml|$WORK/prom/kong.yml|" -e "s|^admin_listen = off|admin_listen = 127.0.0.1:$PROM_ADMIN|" \
    "$WORK/kong/kong.conf" > "$WORK/prom/kong.conf"
"$GATEWAY" start -c "$WORK/prom/kong.conf" >"$WORK/prom/out.log" 2>&1 & PIDS+=($!)
PROM_PID=$!

wait_for() {
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "not answering: $1" >&2
    cat "$WORK/kong/out.log" >&2
    exit 1
}
wait_for "http://127.0.0.1:$UP/anything"
wait_for "http://127.0.0.1:$NGX/mock/anything"
wait_for "http://127.0.0.1:$KONG/mock/anything"
wait_for "http://127.0.0.1:$RELAY/anything"
[ -z "$COMPARE" ] || wait_for "http://127.0.0.1:$BASE/mock/anything"
wait_for "http://127.0.0.1:$PROM/mock/anything"
wait_for "http://127.0.0.1:$NGX2/mock/anything"
wait_for "http://127.0.0.1:$KONG2/mock/anything"
wait_for "http://127.0.0.1:$HAP/mock/anything"
curl -fsSk -o /dev/null --tlsv1.3 "https://127.0.0.1:$KONG_TLS/mock/anything" \
    || { echo "kong-gateway's ssl listener does not answer" >&2; exit 1; }
curl -fsSk -o /dev/null --tlsv1.3 "https://127.0.0.1:$NGX_TLS/mock/anything" \
    || { echo "nginx's ssl listener does not answer" >&2; exit 1; }
# Resident memory (KiB) of a process.
rss() { awk '/^VmRSS:/ { print $2 }' /proc/"$1"/status; }
# Idle: started, a few requests served (the checks above), nothing else yet.
KONG_IDLE_RSS=$(rss "${PIDS[2]}")
# Read whole first: `grep -q` stops reading at its match, and curl's failed write would fail
# the pipeline.
METRICS=$(curl -fsS "http://127.0.0.1:$PROM_ADMIN/metrics")
grep -q '^kong_http_requests_total{service="upstream",route="mock"' <<<"$METRICS" \
    || { echo "prometheus does not count /mock" >&2; exit 1; }
curl -fsS -o /dev/null "http://127.0.0.1:$KONG/logged/anything" \
    || { echo "/logged does not answer" >&2; exit 1; }
curl -fsS -D - -o /dev/null "http://127.0.0.1:$KONG/mock/anything" | grep -qi '^X-MyPlugin: response' \
    || { echo "my-plugin is not on the route" >&2; exit 1; }
curl -fsS -o /dev/null -H "apikey: bench-key" "http://127.0.0.1:$KONG/auth/anything" \
    || { echo "key-auth + acl refuse the bench consumer" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$KONG/auth/anything")" = 401 ] \
    || { echo "key-auth is not on /auth" >&2; exit 1; }
curl -fsS -D - -o /dev/null -H "apikey: bench-key" "http://127.0.0.1:$KONG/limited/anything" \
    | grep -qi '^X-Transformed: yes' || { echo "the chain is not on /limited" >&2; exit 1; }
curl -fsS -o /dev/null "http://127.0.0.1:$KONG/cached/anything"
curl -fsS -D - -o /dev/null "http://127.0.0.1:$KONG/cached/anything" | grep -qi '^X-Cache-Status: Hit' \
    || { echo "proxy-cache does not hit on /cached" >&2; exit 1; }

# CPU time (user + system) processes and their threads have used, in clock ticks.
ticks() { for p in $1; do cat /proc/"$p"/task/*/stat 2>/dev/null; done | awk '{ t += $14 + $15 } END { print t }'; }
HZ=$(getconf CLK_TCK)

# Prints "req/s p99_ms cpu_us_per_request" for one wrk run against $1, charging the CPU time
# of the processes $2 (the server under test; a space-separated list for several workers).
# WRK_THREADS and WRK_CONNECTIONS override THREADS and CONNECTIONS for one call.
run() {
    local out rps p99 n t0 t1
    t0=$(ticks "$2")
    out=$(wrk -t"${WRK_THREADS:-$THREADS}" -c"${WRK_CONNECTIONS:-$CONNECTIONS}" -d"$DURATION" --latency ${3:+-H "$3"} "$1")
    t1=$(ticks "$2")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        echo "errors during the run against $1:" >&2
        grep 'Non-2xx\|Socket errors' <<<"$out" >&2
    fi
    # p99 as milliseconds.
    p99=$(awk -v v="$p99" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000;
        printf "%.2f", n }')
    echo "$rps $p99 $(awk -v t="$((t1 - t0))" -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
}

# As run, with h2load: HTTP/2 over TLS, 5 connections of 10 concurrent streams each. h2load
# gives no percentiles: the second field is the mean request time and its spread.
h2run() {
    local out rps time n t0 t1
    t0=$(ticks "$2")
    out=$(h2load -c5 -m10 -t1 -D"${DURATION%s}" "$1" 2>&1)
    t1=$(ticks "$2")
    rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out")
    n=$(awk '/^requests:/ { print $8 }' <<<"$out")
    if ! grep -q ' 0 failed, 0 errored' <<<"$out"; then
        echo "errors during the h2load run against $1:" >&2
        grep '^requests:' <<<"$out" >&2
    fi
    time=$(awk '/^time for request:/ { print $6 "_mean,_sd_" $7 }' <<<"$out")
    echo "$rps $time $(awk -v t="$((t1 - t0))" -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.1f", t / hz * 1e6 / (n > 0 ? n : 1) }')"
}

# The RSS (KiB) each idle keep-alive client connection adds to the processes $2: 1,000 clients
# each make one request to $1, then stay connected while the RSS is read.
conn_rss() {
    local before after
    before=$(for p in $2; do rss "$p"; done | awk '{ t += $1 } END { print t }')
    after=$(python3 - "$1" "$2" <<'PY'
import http.client, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
conns = []
for _ in range(1000):
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    c.request("GET", url.path)
    c.getresponse().read()
    conns.append(c)
total = 0
for pid in sys.argv[2].split():
    with open(f"/proc/{pid}/status") as f:
        total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
print(total)
PY
)
    awk -v a="$after" -v b="$before" 'BEGIN { printf "%.1f", (a - b) / 1000 }'
}

# Memory per connection first, on processes that have served only the checks above: an
# allocator keeps what a process once used, so a process that has held many connections
# before would show less than a connection costs. (p)'s processes, the 2-worker ones.
NGX_WORKER2=$(pgrep -P "$NGX2_PID" | tr '\n' ' ')
KONG_CONN_RSS=$(conn_rss "http://127.0.0.1:$KONG2/mock/anything" "$KONG2_PID")
NGX_CONN_RSS=$(conn_rss "http://127.0.0.1:$NGX2/mock/anything" "$NGX_WORKER2")
HAP_CONN_RSS=$(conn_rss "http://127.0.0.1:$HAP/mock/anything" "$HAP_PID")

# Warm-up, then the measured runs.
wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$NGX/mock/anything" >/dev/null
wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$KONG/mock/anything" >/dev/null
# nginx's work is done by its worker process, the master's child.
UP_WORKER=$(pgrep -P "${PIDS[0]}" | head -1)
NGX_WORKER=$(pgrep -P "${PIDS[1]}" | head -1)
read -r A_RPS A_P99 A_CPU < <(run "http://127.0.0.1:$UP/anything" "$UP_WORKER")
read -r B_RPS B_P99 B_CPU < <(run "http://127.0.0.1:$NGX/mock/anything" "$NGX_WORKER")
read -r C_RPS C_P99 C_CPU < <(run "http://127.0.0.1:$KONG/mock/anything" "${PIDS[2]}")
read -r D_RPS D_P99 D_CPU < <(run "http://127.0.0.1:$RELAY/anything" "${PIDS[3]}")
read -r F_RPS F_P99 F_CPU < <(run "http://127.0.0.1:$KONG/auth/anything" "${PIDS[2]}" "apikey: bench-key")
read -r G_RPS G_P99 G_CPU < <(run "http://127.0.0.1:$KONG/limited/anything" "${PIDS[2]}" "apikey: bench-key")
read -r H_RPS H_P99 H_CPU < <(run "http://127.0.0.1:$KONG/cached/anything" "${PIDS[2]}")
# Batches first; each run's queue is left to empty before the next run (a queue of one entry
# per POST falls behind at these rates and drops its oldest entries, as Kong's does).
read -r J_RPS J_P99 J_CPU < <(run "http://127.0.0.1:$KONG/batched/anything" "${PIDS[2]}")
sleep 3
read -r I_RPS I_P99 I_CPU < <(run "http://127.0.0.1:$KONG/logged/anything" "${PIDS[2]}")
sleep 3
# (c) against (k), alternately: the two processes differ only by the global plugin.
wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PROM/mock/anything" >/dev/null
PROM_ROWS=""
for i in $(seq 1 "$ROUNDS"); do
    read -r R P U < <(run "http://127.0.0.1:$KONG/mock/anything" "${PIDS[2]}")
    PROM_ROWS+=$(printf '| (c) round %s | %.0f | %s | %s | %.2f |' "$i" "$R" "$P" "$U" "$(awk -v c="$R" -v b="$B_RPS" 'BEGIN { print c / b }')")$'\n'
    read -r R2 P2 U2 < <(run "http://127.0.0.1:$PROM/mock/anything" "$PROM_PID")
    PROM_ROWS+=$(printf '| (k) round %s, prometheus global: %.3f × (c) | %.0f | %s | %s | %.2f |' "$i" "$(awk -v k="$R2" -v c="$R" 'BEGIN { print k / c }')" "$R2" "$P2" "$U2" "$(awk -v c="$R2" -v b="$B_RPS" 'BEGIN { print c / b }')")$'\n'
done
# (l), (m), (n) alternately: one target, round-robin over four, consistent hashing by header.
wait_for "http://127.0.0.1:$KONG/rr/anything"
curl -fsS -o /dev/null -H "x-user: bench" "http://127.0.0.1:$KONG/hash/anything" \
    || { echo "/hash does not answer" >&2; exit 1; }
LB_ROWS=""
for i in $(seq 1 "$ROUNDS"); do
    # The same header for all three, so the rows differ by the balancer only; the order turns
    # each round, so a machine that slows down during a round favours none of them.
    declare -A LB=()
    case $(( (i - 1) % 3 )) in
        0) ORDER="single rr hash" ;;
        1) ORDER="rr hash single" ;;
        *) ORDER="hash single rr" ;;
    esac
    for route in $ORDER; do
        read -r R P U < <(run "http://127.0.0.1:$KONG/$route/anything" "${PIDS[2]}" "x-user: bench")
        LB[$route]="$R $P $U"
    done
    read -r L P U <<<"${LB[single]}"
    LB_ROWS+=$(printf '| (l) round %s (%s), one target | %.0f | %s | %s | %.2f |' "$i" "$ORDER" "$L" "$P" "$U" "$(awk -v c="$L" -v b="$B_RPS" 'BEGIN { print c / b }')")$'\n'
    read -r M P U <<<"${LB[rr]}"
    LB_ROWS+=$(printf '| (m) round %s, round-robin over 4 targets: %.3f × (l) | %.0f | %s | %s | %.2f |' "$i" "$(awk -v m="$M" -v l="$L" 'BEGIN { print m / l }')" "$M" "$P" "$U" "$(awk -v c="$M" -v b="$B_RPS" 'BEGIN { print c / b }')")$'\n'
    read -r N P U <<<"${LB[hash]}"
    LB_ROWS+=$(printf '| (n) round %s, consistent-hashing by header: %.3f × (l) | %.0f | %s | %s | %.2f |' "$i" "$(awk -v n="$N" -v l="$L" 'BEGIN { print n / l }')" "$N" "$P" "$U" "$(awk -v c="$N" -v b="$B_RPS" 'BEGIN { print c / b }')")$'\n'
    unset LB
done
# (o) to (s): the performance issue's rows.
read -r O_NGX_RPS O_NGX_P99 O_NGX_CPU < <(WRK_CONNECTIONS=1000 run "http://127.0.0.1:$NGX/mock/anything" "$NGX_WORKER")
read -r O_HAP_RPS O_HAP_P99 O_HAP_CPU < <(WRK_CONNECTIONS=1000 run "http://127.0.0.1:$HAP/mock/anything" "$HAP_PID")
read -r O_RPS O_P99 O_CPU < <(WRK_CONNECTIONS=1000 run "http://127.0.0.1:$KONG/mock/anything" "${PIDS[2]}")
read -r P_NGX_RPS P_NGX_P99 P_NGX_CPU < <(WRK_THREADS=2 WRK_CONNECTIONS=100 run "http://127.0.0.1:$NGX2/mock/anything" "$NGX_WORKER2")
read -r P_RPS P_P99 P_CPU < <(WRK_THREADS=2 WRK_CONNECTIONS=100 run "http://127.0.0.1:$KONG2/mock/anything" "$KONG2_PID")
read -r Q_NGX_RPS Q_NGX_P99 Q_NGX_CPU < <(run "https://127.0.0.1:$NGX_TLS/mock/anything" "$NGX_WORKER")
read -r Q_RPS Q_P99 Q_CPU < <(run "https://127.0.0.1:$KONG_TLS/mock/anything" "${PIDS[2]}")
read -r R_NGX_RPS R_NGX_T R_NGX_CPU < <(h2run "https://127.0.0.1:$NGX_TLS/mock/anything" "$NGX_WORKER")
read -r R_RPS R_T R_CPU < <(h2run "https://127.0.0.1:$KONG_TLS/mock/anything" "${PIDS[2]}")
read -r S_RPS S_P99 S_CPU < <(run "http://127.0.0.1:$HAP/mock/anything" "$HAP_PID")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
row() { printf '| %s | %.0f | %s | %s | %s |\n' "$1" "$2" "${3//_/ }" "$4" "$5"; }
PERF_ROWS=$(
    row "(s) HAProxy, 1 thread, keep-alive" "$S_RPS" "$S_P99" "$S_CPU" "$(ratio "$S_RPS" "$B_RPS")"
    row "(o) nginx proxy, -c1000" "$O_NGX_RPS" "$O_NGX_P99" "$O_NGX_CPU" "1.00"
    row "(o) HAProxy, -c1000" "$O_HAP_RPS" "$O_HAP_P99" "$O_HAP_CPU" "$(ratio "$O_HAP_RPS" "$O_NGX_RPS") (vs nginx -c1000)"
    row "(o) kong-gateway, my-plugin, -c1000" "$O_RPS" "$O_P99" "$O_CPU" "$(ratio "$O_RPS" "$O_NGX_RPS") (vs nginx -c1000)"
    row "(p) nginx proxy, 2 workers, -t2 -c100" "$P_NGX_RPS" "$P_NGX_P99" "$P_NGX_CPU" "1.00"
    row "(p) kong-gateway, 2 worker threads, -t2 -c100" "$P_RPS" "$P_P99" "$P_CPU" "$(ratio "$P_RPS" "$P_NGX_RPS") (vs nginx 2 workers)"
    row "(q) nginx proxy, HTTPS (TLS 1.3)" "$Q_NGX_RPS" "$Q_NGX_P99" "$Q_NGX_CPU" "1.00"
    row "(q) kong-gateway, HTTPS (TLS 1.3)" "$Q_RPS" "$Q_P99" "$Q_CPU" "$(ratio "$Q_RPS" "$Q_NGX_RPS") (vs nginx HTTPS)"
    row "(r) nginx proxy, HTTP/2 (h2load -c5 -m10; mean request time and its sd, not p99)" "$R_NGX_RPS" "$R_NGX_T" "$R_NGX_CPU" "1.00"
    row "(r) kong-gateway, HTTP/2 (h2load -c5 -m10; mean request time and its sd, not p99)" "$R_RPS" "$R_T" "$R_CPU" "$(ratio "$R_RPS" "$R_NGX_RPS") (vs nginx HTTP/2)"
)

ROWS=""
if [ -n "$COMPARE" ]; then
    wrk -t1 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$BASE/mock/anything" >/dev/null
    # One run of build $1 (`this` or `base`) on route $2 (`mock` or `auth`), as a row.
    compare_row() {
        local url pid label row
        if [ "$1" = this ]; then
            url="http://127.0.0.1:$KONG/$2/anything" pid=${PIDS[2]} label="this build"
        else
            url="http://127.0.0.1:$BASE/$2/anything" pid=$BASE_PID label=$COMPARE
        fi
        row=$([ "$2" = mock ] && { [ "$1" = this ] && echo c || echo e; } || echo f)
        local key=""
        [ "$2" = auth ] && key="apikey: bench-key"
        read -r R P U < <(run "$url" "$pid" "$key")
        ROWS+=$(printf '| (%s) %s, round %s | %.0f | %s | %s | %.2f |' "$row" "$label" "$i" "$R" "$P" "$U" "$(awk -v c="$R" -v b="$B_RPS" 'BEGIN { print c / b }')")$'\n'
    }
    # The pair's order swaps every round: the build that runs second tends to do better here.
    for i in $(seq 1 "$ROUNDS"); do
        if [ $((i % 2)) = 1 ]; then first=this second=base; else first=base second=this; fi
        for route in mock auth; do
            compare_row "$first" "$route"
            compare_row "$second" "$route"
        done
    done
fi

printf '\nwrk -t%s -c%s -d%s, %s cores, %s\n\n' "$THREADS" "$CONNECTIONS" "$DURATION" "$(nproc)" "$("$NGINX" -v 2>&1)"
printf '| target | req/s | p99 (ms) | CPU per request (µs) | req/s vs nginx proxy |\n|---|---|---|---|---|\n'
printf '| (a) nginx serving the response | %.0f | %s | %s | |\n' "$A_RPS" "$A_P99" "$A_CPU"
printf '| (b) nginx proxy_pass, keep-alive, 1 worker | %.0f | %s | %s | 1.00 |\n' "$B_RPS" "$B_P99" "$B_CPU"
printf '| (c) kong-gateway, 1 worker thread, my-plugin | %.0f | %s | %s | %.2f |\n' "$C_RPS" "$C_P99" "$C_CPU" \
    "$(awk -v c="$C_RPS" -v b="$B_RPS" 'BEGIN { print c / b }')"
printf '| (d) tcp-relay, 1 thread, no HTTP (the floor) | %.0f | %s | %s | %.2f |\n' "$D_RPS" "$D_P99" "$D_CPU" \
    "$(awk -v d="$D_RPS" -v b="$B_RPS" 'BEGIN { print d / b }')"
printf '| (f) kong-gateway, 1 worker thread, key-auth + acl | %.0f | %s | %s | %.2f |\n' "$F_RPS" "$F_P99" "$F_CPU" \
    "$(awk -v f="$F_RPS" -v b="$B_RPS" 'BEGIN { print f / b }')"
printf '| (g) kong-gateway, 1 worker thread, key-auth + rate-limiting (local) + correlation-id + response-transformer | %.0f | %s | %s | %.2f |\n' "$G_RPS" "$G_P99" "$G_CPU" \
    "$(awk -v g="$G_RPS" -v b="$B_RPS" 'BEGIN { print g / b }')"
printf '| (h) kong-gateway, 1 worker thread, proxy-cache hits | %.0f | %s | %s | %.2f |\n' "$H_RPS" "$H_P99" "$H_CPU" \
    "$(awk -v h="$H_RPS" -v b="$B_RPS" 'BEGIN { print h / b }')"
printf '| (i) kong-gateway, 1 worker thread, my-plugin + http-log (one entry per POST): %.3f × (c) | %.0f | %s | %s | %.2f |\n' \
    "$(awk -v i="$I_RPS" -v c="$C_RPS" 'BEGIN { print i / c }')" "$I_RPS" "$I_P99" "$I_CPU" \
    "$(awk -v i="$I_RPS" -v b="$B_RPS" 'BEGIN { print i / b }')"
printf '| (j) kong-gateway, 1 worker thread, my-plugin + http-log (batches of up to 1000): %.3f × (c) | %.0f | %s | %s | %.2f |\n' \
    "$(awk -v j="$J_RPS" -v c="$C_RPS" 'BEGIN { print j / c }')" "$J_RPS" "$J_P99" "$J_CPU" \
    "$(awk -v j="$J_RPS" -v b="$B_RPS" 'BEGIN { print j / b }')"
printf '%s' "$PROM_ROWS"
printf '%s' "$LB_ROWS"
printf '%s' "$ROWS"
printf '%s\n' "$PERF_ROWS"
printf '\n| memory | kong-gateway | nginx worker | HAProxy |\n|---|---|---|---|\n'
printf '| RSS idle after start (KiB) | %s | | |\n' "$KONG_IDLE_RSS"
printf '| RSS per idle keep-alive client connection (KiB, 1,000 held, fresh processes; nginx: 2 workers) | %s | %s | %s |\n' \
    "$KONG_CONN_RSS" "$NGX_CONN_RSS" "$HAP_CONN_RSS"

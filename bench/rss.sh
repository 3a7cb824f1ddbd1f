#!/usr/bin/env bash
# Measures kong-gateway's resident memory: idle after start, then while CONNS clients each hold
# a keep-alive connection on which they have made a proxied request (my-plugin on the route).
#
#   bash bench/rss.sh            # 1,000 connections
#   CONNS=5000 bash bench/rss.sh
set -euo pipefail

CONNS=${CONNS:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
PROXY=$(free_port); MOCK=$(free_port)

(cd "$ROOT" && cargo build --release -q -p kong-pdk-examples --bin kong-gateway)
cat > "$WORK/kong.yml" <<EOF
_format_version: "3.0"
services:
  - name: mock
    url: http://127.0.0.1:$MOCK
    routes: [{ name: mock, paths: ["/mock"] }]
    plugins: [{ name: my-plugin }]
EOF
cat > "$WORK/kong.conf" <<EOF
proxy_listen = 127.0.0.1:$PROXY
database = off
declarative_config = $WORK/kong.yml
plugins = bundled,my-plugin
prefix = $WORK/prefix
mock_upstream = 127.0.0.1:$MOCK
nginx_worker_processes = 1
log_level = error
EOF
ulimit -n $((CONNS * 2 + 256))
"$ROOT/target/release/kong-gateway" start -c "$WORK/kong.conf" >"$WORK/out.log" 2>&1 &
PID=$!; PIDS+=("$PID")
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PROXY/mock/anything" 2>/dev/null && break
    sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
IDLE=$(rss)
LOADED=$(python3 - "$PROXY" "$CONNS" "$PID" <<'EOF'
import socket, sys
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
req = b"GET /mock/anything HTTP/1.1\r\nHost: localhost\r\n\r\n"
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    socks.append(s)
for s in socks:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(body) < length:
        body += s.recv(65536)
rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
print(rss)
EOF
)
printf '| state | RSS |\n|---|---|\n| idle, after start | %.1f MiB |\n| %s keep-alive connections, each after a proxied request | %.1f MiB (%.1f KiB per connection) |\n' \
    "$(awk -v k="$IDLE" 'BEGIN { print k / 1024 }')" "$CONNS" \
    "$(awk -v k="$LOADED" 'BEGIN { print k / 1024 }')" \
    "$(awk -v a="$IDLE" -v b="$LOADED" -v n="$CONNS" 'BEGIN { print (b - a) / n }')"

#!/usr/bin/env bash
# Replays the hardening probes against a release kong-gateway on loopback and prints what
# they did to it: resident memory, CPU, connections left open, and writes lost or brought back.
# Bounded: every probe has a size and a deadline, and the script stops by itself (about two
# minutes after the build).
#
#   bash bench/soak.sh
#   IDLE=2000 SLOW=100 CRLF_MB=50 ROUNDS=5 bash bench/soak.sh    # a smaller run
#
# Probes (issue "Hardening"):
#   idle      IDLE connections that send nothing: all closed at client_header_timeout (5 s here)
#   slowloris SLOW connections sending a header byte a second: closed at the same timeout
#   fd-limit  a second gateway under `ulimit -n 256`, flooded with 400 silent connections:
#             its CPU while at the limit (an accept loop that spins burns a core)
#   crlf      CRLF_MB MiB of blank lines on one connection, then a request: RSS growth
#   body      a BODY_MB MiB upload to a buffered route: spooled to disk, RSS growth
#   writes    4 clients PATCHing one field each of 50 services, ROUNDS times; then 50 PATCH/DELETE
#             races; then kill -9 and a restart: fields older than their last acknowledged
#             value, and acknowledged deletes whose entity came back
set -euo pipefail

IDLE=${IDLE:-10000}
SLOW=${SLOW:-500}
CRLF_MB=${CRLF_MB:-200}
BODY_MB=${BODY_MB:-200}
ROUNDS=${ROUNDS:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
PROXY=$(free_port); ADMIN=$(free_port); SINK=$(free_port)
LIMITED=$(free_port)

(cd "$ROOT" && cargo build --release -q -p kong-pdk-examples --bin kong-gateway)
BIN="$ROOT/target/release/kong-gateway"

conf() { # conf <proxy port> <admin listen> <prefix>
    cat <<EOF
proxy_listen = 127.0.0.1:$1
admin_listen = $2
database = sqlite
prefix = $3
nginx_worker_processes = 1
nginx_http_client_header_timeout = 5s
log_level = error
EOF
}
conf "$PROXY" "127.0.0.1:$ADMIN" "$WORK/prefix" > "$WORK/kong.conf"
conf "$LIMITED" "off" "$WORK/limited" > "$WORK/limited.conf"

ulimit -n $((IDLE + SLOW + 1024))
start() {
    "$BIN" start -c "$WORK/kong.conf" >>"$WORK/out.log" 2>&1 &
    PID=$!; PIDS+=("$PID")
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN/status" 2>/dev/null && return
        sleep 0.1
    done
    echo "the gateway did not start: $(cat "$WORK/out.log")" >&2; exit 1
}
start
(ulimit -n 256; exec "$BIN" start -c "$WORK/limited.conf" >>"$WORK/limited.log" 2>&1) &
LPID=$!; PIDS+=("$LPID")

echo "| probe | result |"
echo "|---|---|"
python3 - "$PROXY" "$ADMIN" "$SINK" "$LIMITED" "$LPID" "$IDLE" "$SLOW" "$CRLF_MB" "$BODY_MB" "$PID" <<'EOF'
import os, socket, sys, threading, time, http.client, json
proxy, admin, sink, limited, lpid, idle, slow, crlf_mb, body_mb, pid = map(int, sys.argv[1:])

def rss_kib(p): return int([l for l in open(f"/proc/{p}/status") if l.startswith("VmRSS")][0].split()[1])
def ticks(p):
    f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
HZ = os.sysconf("SC_CLK_TCK")
def row(probe, result): print(f"| {probe} | {result} |", flush=True)
def api(method, path, body=None, port=admin):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, (json.loads(data) if data else None)
def wait_for(cond, limit):
    end = time.time() + limit
    while time.time() < end:
        if cond(): return True
        time.sleep(0.1)
    return cond()

# A sink upstream that reads each request's body to its end and answers 200 with its size.
def sink_serve():
    srv = socket.create_server(("127.0.0.1", sink)); srv.listen(64)
    def one(c):
        try:
            buf = b""
            while b"\r\n\r\n" not in buf: buf += c.recv(65536)
            head, rest = buf.split(b"\r\n\r\n", 1)
            lengths = [l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")]
            n = int(lengths[0]) if lengths else 0
            got = len(rest)
            while got < n:
                d = c.recv(1 << 20)
                if not d: break
                got += len(d)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%d" % (len(str(got)), got))
        finally:
            c.close()
    while True:
        c, _ = srv.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()
threading.Thread(target=sink_serve, daemon=True).start()
assert api("POST", "/services", {"name": "sink", "url": f"http://127.0.0.1:{sink}"})[0] == 201
assert api("POST", "/services/sink/routes", {"name": "sink", "paths": ["/sink"]})[0] == 201

def open_alive(socks):
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            d = s.recv(1)
            alive += 0 if d == b"" else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive

# idle
base = rss_kib(pid)
socks = [socket.create_connection(("127.0.0.1", proxy)) for _ in range(idle)]
time.sleep(1)
t0 = ticks(pid); time.sleep(2); cpu = (ticks(pid) - t0) / HZ / 2 * 100
held = rss_kib(pid)
time.sleep(5)
left = open_alive(socks)
for s in socks: s.close()
row(f"idle: {idle} silent connections", f"RSS {base/1024:.1f} → {held/1024:.1f} MiB while held, CPU {cpu:.0f} %; "
    f"open after 8 s (timeout 5 s): {left}")

# slowloris
socks = [socket.create_connection(("127.0.0.1", proxy)) for _ in range(slow)]
for s in socks: s.sendall(b"GET /sink HTTP/1.1\r\n")
start = time.time()
while time.time() - start < 8:
    for s in socks:
        try: s.sendall(b"X")
        except OSError: pass
    time.sleep(1)
left = open_alive(socks)
for s in socks: s.close()
row(f"slowloris: {slow} heads, a byte a second", f"open after 8 s (timeout 5 s): {left}")

# fd-limit
socks = []
for _ in range(400):
    try: socks.append(socket.create_connection(("127.0.0.1", limited), timeout=1))
    except OSError: break
time.sleep(0.5)
t0 = ticks(lpid); time.sleep(3); cpu = (ticks(lpid) - t0) / HZ / 3 * 100
for s in socks: s.close()
def served_after():
    end = time.time() + 15
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", limited, timeout=2); c.request("GET", "/nothing")
            return c.getresponse().status
        except OSError:
            time.sleep(0.2)
    return None
row("fd-limit: 400 silent connections to a gateway under `ulimit -n 256`",
    f"CPU at the limit {cpu:.0f} %; after they close, a new request answers {served_after()}")

# crlf
base = rss_kib(pid)
s = socket.create_connection(("127.0.0.1", proxy))
chunk = b"\r\n" * (1 << 19)
for _ in range(crlf_mb):
    s.sendall(chunk)
s.sendall(b"GET /sink HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
answer = b""
while True:
    d = s.recv(65536)
    if not d: break
    answer += d
s.close()
row(f"crlf: {crlf_mb} MiB of blank lines, then a request",
    f"answered {answer[9:12].decode()}; RSS {base/1024:.1f} → {rss_kib(pid)/1024:.1f} MiB")

# body
base = rss_kib(pid)
peak = [base]
def watch(stop):
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kib(pid)); time.sleep(0.05)
stop = threading.Event(); threading.Thread(target=watch, args=(stop,), daemon=True).start()
s = socket.create_connection(("127.0.0.1", proxy))
n = body_mb << 20
s.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % n)
block = b"b" * (1 << 20)
for _ in range(body_mb): s.sendall(block)
answer = b""
while True:
    d = s.recv(65536)
    if not d: break
    answer += d
s.close(); stop.set()
got = answer.split(b"\r\n\r\n", 1)[1].decode()
row(f"body: a {body_mb} MiB upload to a buffered route", f"answered {answer[9:12].decode()}, upstream got "
    f"{got} bytes; RSS peak +{(peak[0]-base)/1024:.1f} MiB")
EOF

# writes, then kill -9 and a restart
python3 - "$ADMIN" "$ROUNDS" > "$WORK/writes.json" <<'EOF'
import sys, threading, http.client, json
admin, rounds = int(sys.argv[1]), int(sys.argv[2])
def api(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers={"Content-Type": "application/json"})
    r = c.getresponse(); r.read(); c.close(); return r.status
ids = [f"w{i}" for i in range(50)]
for name in ids: assert api("PUT", f"/services/{name}", {"url": "http://127.0.0.1:9"}) in (200, 201)
fields = ["retries", "connect_timeout", "read_timeout", "write_timeout"]
acked = {}
def patcher(field):
    for r in range(1, rounds + 1):
        for name in ids:
            if api("PATCH", f"/services/{name}", {field: 1000 + r}) == 200:
                acked[(name, field)] = 1000 + r
threads = [threading.Thread(target=patcher, args=(f,)) for f in fields]
for t in threads: t.start()
for t in threads: t.join()
deleted = []
def race(name):
    t = threading.Thread(target=api, args=("PATCH", f"/services/{name}", {"retries": 7}))
    t.start()
    if api("DELETE", f"/services/{name}") == 204: deleted.append(name)
    t.join()
racers = [f"r{i}" for i in range(50)]
for name in racers: assert api("PUT", f"/services/{name}", {"url": "http://127.0.0.1:9"}) in (200, 201)
rt = [threading.Thread(target=race, args=(n,)) for n in racers]
for t in rt: t.start()
for t in rt: t.join()
json.dump({"acked": [[k[0], k[1], v] for k, v in acked.items()], "deleted": deleted}, sys.stdout)
EOF
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
start
python3 - "$ADMIN" "$WORK/writes.json" "$ROUNDS" <<'EOF'
import sys, http.client, json
admin, path, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
w = json.load(open(path))
def get(p):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=30); c.request("GET", p)
    r = c.getresponse(); d = r.read(); c.close(); return r.status, (json.loads(d) if d else None)
older = 0
for name, field, value in w["acked"]:
    status, svc = get(f"/services/{name}")
    if status != 200 or svc[field] < value: older += 1
back = sum(1 for name in w["deleted"] if get(f"/services/{name}")[0] != 404)
print(f"| writes: {len(w['acked'])} fields PATCHed by 4 clients × {rounds} rounds, 50 PATCH/DELETE races, kill -9, restart | "
      f"fields older than their last acknowledged value: {older}; acknowledged deletes ({len(w['deleted'])}) brought back: {back} |")
EOF

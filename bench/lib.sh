# Shared by the bench scripts (sourced): free ports, a temporary work directory, and the
# processes started, all cleaned up when the script exits.

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d)
# Processes to stop at exit; scripts append the PIDs they start.
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Writes $1/kong.conf for a one-worker kong-gateway on 127.0.0.1:$2 with the declarative
# config $3, the bundled plugins and my-plugin, no Admin API, its prefix under $1.
gateway_conf() {
    mkdir -p "$1"
    cat > "$1/kong.conf" <<CONF
proxy_listen = 127.0.0.1:$2
admin_listen = off
database = off
declarative_config = $3
plugins = bundled,my-plugin
prefix = $1/prefix
nginx_worker_processes = 1
log_level = error
CONF
}

# Shared by the drills of docs/operations.md (sourced, not run).
#
# The drills run the guide's `bash` blocks verbatim (`doc SECTION`), in one bash process with
# `set -euo pipefail`, against a real PostgreSQL, real `caja serve` and `caja worker` processes and, for the
# restart, a real nginx with the shipped configuration. What a server has and this machine does not is played
# by stand-ins defined here, and only those: `sudo` (runs the command), `systemctl` (starts, stops and
# restarts the drill's processes the way the units in deploy/systemd do: SIGTERM, wait, start again),
# `journalctl` (prints a unit's log) and `nginx` (the drill's nginx, with its configuration in $WORK).
#
# Needs: WORK (a scratch folder), PORT_A and PORT_B (the two instances), PORT_HTTP and PORT_HTTPS (nginx),
# DRILL_PG_SERVER (postgresql://user@host:port of the test server), caja, curl, psql and python on PATH, and
# the CAJA_* variables of the drill (what /etc/caja/caja.env holds on a server).

DRILLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$DRILLS/../.." && pwd)
DRILL_PIDS=()
export DOC_RUN_LOG=${DOC_RUN_LOG:-$WORK/doc-blocks-run.txt}

# ---- the guide ------------------------------------------------------------------------------------------

doc() {  # doc SECTION: run every `bash` block of that section of docs/operations.md, verbatim
  local script
  script=$(python3 "$DRILLS/doc_blocks.py" "$ROOT/docs/operations.md" "$1" "$DOC_RUN_LOG")
  echo "── docs/operations.md §$1" >&2
  eval "$script"
}

# The variables of the guide's first block that name this machine's addresses: the only values a drill changes
# after running that block (tests/ops/test_docs_drills.py checks the block defines exactly these).
DRILL_VARIABLES="CAJA_URL CAJA_PORTS PG_SERVER NGINX_ACCESS_LOG"

use_drill_addresses() {  # CAJA_URL: the proxy when there is one, else the first instance
  CAJA_PORTS="$PORT_A $PORT_B"
  CAJA_URL=${PROXY_URL:-http://127.0.0.1:$PORT_A}
  PG_SERVER=$DRILL_PG_SERVER
  NGINX_ACCESS_LOG=$WORK/nginx/logs/caja.access.log
}

# ---- processes (what systemd does on the server) --------------------------------------------------------

start_instance() {  # start_instance PORT [VAR=value ...]: the unit caja@PORT
  local port=$1
  shift
  env CAJA_INSTANCE_ID="drill-$port" "$@" caja serve --host 127.0.0.1 --port "$port" >>"$WORK/caja@$port.log" 2>&1 &
  echo $! >"$WORK/caja@$port.pid"
  DRILL_PIDS+=("$!")
  wait_live "$port"
}

stop_instance() {  # stop_instance PORT: SIGTERM (graceful drain), then wait for the exit
  local pid code=0
  [ -f "$WORK/caja@$1.pid" ] || return 0
  pid=$(cat "$WORK/caja@$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || code=$?
  rm -f "$WORK/caja@$1.pid"
  if [ "$code" != 0 ]; then
    echo "caja@$1 terminó con código $code" >&2
    return 1
  fi
}

start_worker() {  # the unit caja-worker
  env CAJA_INSTANCE_ID=drill-worker caja worker --check-every 0.5 --beat-every 1 >>"$WORK/caja-worker.log" 2>&1 &
  echo $! >"$WORK/caja-worker.pid"
  DRILL_PIDS+=("$!")
}

stop_worker() {
  local pid
  [ -f "$WORK/caja-worker.pid" ] || return 0
  pid=$(cat "$WORK/caja-worker.pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$WORK/caja-worker.pid"
}

wait_live() {  # wait_live PORT
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/health/live" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "caja@$1 no respondió:" >&2
  tail -n 30 "$WORK/caja@$1.log" >&2
  return 1
}

wait_health() {  # wait_health URL STATUS [CURL_ARGS...]: until /health reports STATUS
  local url=$1 want=$2
  shift 2
  for _ in $(seq 1 300); do
    curl -s "$@" "$url/health" | grep "\"status\":\"$want\"" >/dev/null && return 0
    sleep 0.2
  done
  echo "/health no llegó a $want:" >&2
  curl -s "$@" "$url/health" >&2
  return 1
}

expect_status() {  # expect_status CODE CURL_ARGS...
  local want=$1 got
  shift
  got=$(curl -s -o /dev/null -w '%{http_code}' "$@" || true)
  if [ "$got" != "$want" ]; then
    echo "se esperaba HTTP $want y llegó $got: curl $*" >&2
    return 1
  fi
}

stop_all() {
  local pid
  for pid in "${DRILL_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${DRILL_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -f "$WORK/nginx/nginx.pid" ]; then
    command nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -s quit 2>/dev/null || true
  fi
}
trap stop_all EXIT

# ---- stand-ins for the server's system commands ---------------------------------------------------------

sudo() {
  if [ "${1:-}" = "-u" ]; then shift 2; fi
  "$@"
}

systemctl() {  # restart|start|stop|enable --now UNIT..., reload nginx
  local action=$1 unit pidfile
  shift
  if [ "$action" = enable ]; then
    [ "${1:-}" = --now ] || { echo "systemctl enable sin --now: el simulacro solo arranca" >&2; return 1; }
    action=start
    shift
  fi
  for unit in "$@"; do
    case "$action:$unit" in
      restart:caja@*) stop_instance "${unit#caja@}" && start_instance "${unit#caja@}" ;;
      start:caja@*) start_instance "${unit#caja@}" ;;
      stop:"caja@*")
        for pidfile in "$WORK"/caja@*.pid; do
          [ -e "$pidfile" ] || continue
          pidfile=${pidfile##*/caja@}
          stop_instance "${pidfile%.pid}"
        done
        ;;
      stop:caja@*) stop_instance "${unit#caja@}" ;;
      start:caja-worker) start_worker ;;
      stop:caja-worker) stop_worker ;;
      restart:caja-worker) stop_worker && start_worker ;;
      reload:nginx) command nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -s reload ;;
      *) echo "systemctl $action $unit: el simulacro no lo reproduce" >&2; return 1 ;;
    esac
  done
}

journalctl() {  # journalctl -u UNIT [...]: the unit's log (UNIT may be a pattern, as 'caja@*')
  local unit=""
  while [ $# -gt 0 ]; do
    case "$1" in -u) unit=$2; shift 2 ;; *) shift ;; esac
  done
  # shellcheck disable=SC2086  # the pattern expands to every matching unit's log
  cat "$WORK"/$unit.log
}

nginx() {  # the drill's nginx (configuration and pid in $WORK/nginx)
  command nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" "$@"
}

# ---- the proxy: deploy/nginx/caja.conf on loopback high ports ---------------------------------------------

start_proxy() {  # start_proxy HTTP_PORT HTTPS_PORT APP_PORT... : the shipped config, ports and certificate swapped
  local http=$1 https=$2
  shift 2
  if ! command -v nginx >/dev/null 2>&1; then
    echo "Instalando nginx (paquete Debian)…" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  fi
  mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=caja.example.cl" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:caja.example.cl" \
    -keyout "$WORK/nginx/tls/privkey.pem" -out "$WORK/nginx/tls/fullchain.pem" 2>/dev/null
  python3 "$DRILLS/nginx_conf.py" "$ROOT/deploy/nginx/caja.conf" "$WORK/nginx" "$http" "$https" "$@"
  command nginx -t -q -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx"
  command nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx"
  export PROXY_URL="https://127.0.0.1:$https"
  export CURL_CA_BUNDLE="$WORK/nginx/tls/fullchain.pem"  # curl trusts the drill's certificate
  CAJA_URL=$PROXY_URL
}

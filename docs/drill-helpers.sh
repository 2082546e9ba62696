# Helpers shared by the drills in docs/ (sourced, not run). They stand in for what systemd does on a server:
# start an instance of `caja serve` on a port, wait until it answers, stop it.
#
# Needs: WORK (a scratch folder), caja and curl on PATH, the CAJA_* variables of the drill.

DRILL_PIDS=()

start_instance() {  # start_instance NAME PORT [VAR=value ...]
  local name=$1 port=$2
  shift 2
  env "$@" caja serve --host 127.0.0.1 --port "$port" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$WORK/$name.pid"
  DRILL_PIDS+=("$pid")
  wait_live "$port" "$name"
}

start_worker() {  # start_worker [VAR=value ...]
  env "$@" caja worker --check-every 0.5 >"$WORK/worker.log" 2>&1 &
  echo $! >"$WORK/worker.pid"
  DRILL_PIDS+=("$!")
}

wait_health() {  # wait_health URL STATUS: until /health reports STATUS
  for _ in $(seq 1 150); do
    if curl -s "$1/health" | grep -q "\"status\":\"$2\""; then
      return 0
    fi
    sleep 0.2
  done
  echo "/health no llegó a $2:" >&2
  curl -s "$1/health" >&2
  return 1
}

wait_live() {  # wait_live PORT NAME
  for _ in $(seq 1 150); do
    if curl -fsS "http://127.0.0.1:$1/health/live" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "la instancia $2 (puerto $1) no respondió:" >&2
  cat "$WORK/$2.log" >&2
  return 1
}

stop_instance() {  # stop_instance NAME
  local pid
  pid=$(cat "$WORK/$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

restart_instance() {  # restart_instance NAME PORT [VAR=value ...]: what `systemctl restart caja@PORT` does
  stop_instance "$1"
  start_instance "$@"
}

stop_all() {
  for pid in "${DRILL_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

expect_status() {  # expect_status CODE CURL_ARGS...
  local want=$1 got
  shift
  got=$(curl -s -o /dev/null -w '%{http_code}' "$@")
  if [ "$got" != "$want" ]; then
    echo "se esperaba HTTP $want y llegó $got: curl $*" >&2
    return 1
  fi
}

trap stop_all EXIT

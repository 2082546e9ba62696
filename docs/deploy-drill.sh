#!/usr/bin/env bash
# Drill of docs/operations.md: first start, health, metrics, two instances on one PostgreSQL.
# Run by the test suite against a fresh PostgreSQL database (tests/ops/test_docs_drills.py).
# Needs: CAJA_DATABASE_URL, CAJA_SECRET_KEY, CAJA_METRICS_TOKEN, CAJA_BACKUP_DIR, WORK, PORT_A, PORT_B.
set -euo pipefail
source "$(dirname "$0")/drill-helpers.sh"
ADMIN_PASSWORD="clave-del-simulacro-$RANDOM"

# --- First start ------------------------------------------------------------------------------------
if CAJA_SECRET_KEY= caja check-config 2>"$WORK/check.err"; then
  echo "check-config aceptó una configuración sin CAJA_SECRET_KEY" >&2; exit 1
fi
grep -q "CAJA_SECRET_KEY falta" "$WORK/check.err"
caja check-config
caja db status
caja db upgrade
caja db status --check
caja venue create --slug luna --name "Club Luna"
CAJA_NEW_USER_SECRET="$ADMIN_PASSWORD" caja user create --username admin --name "Administración" --role admin

# --- Two stateless instances on the same database ----------------------------------------------------
start_instance A "$PORT_A"
start_instance B "$PORT_B"

CAJA_URL=http://127.0.0.1:$PORT_A
curl -fsS "$CAJA_URL/health"
curl -fsS "$CAJA_URL/health/live"
curl -fsS -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$CAJA_URL/metrics"
curl -fsS -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$CAJA_URL/metrics/prometheus"
expect_status 401 "$CAJA_URL/metrics"
expect_status 401 -H "Authorization: Bearer otro-token" "$CAJA_URL/metrics/prometheus"
curl -fsS -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$CAJA_URL/health" | grep -q '"database":"connected"'
curl -fsS -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$CAJA_URL/health"
curl -fsS -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$CAJA_URL/health" | grep -q '"problems"'
if curl -fsS "$CAJA_URL/health" | grep -q '"problems"'; then
  echo "/health sin credenciales muestra los detalles" >&2; exit 1
fi

# The worker takes the first backup at once; then /health is "ok".
start_worker
wait_health "$CAJA_URL" ok
caja backup list

# Log in through instance A; the session is shared, so instance B knows the user.
JAR="$WORK/cookies.txt"
curl -fsS -c "$JAR" -b "$JAR" -o /dev/null "$CAJA_URL/login"
CSRF=$(awk '$6 == "caja_csrf" {print $7}' "$JAR")
expect_status 303 -c "$JAR" -b "$JAR" -H "x-csrftoken: $CSRF" \
  --data-urlencode "venue_id=1" --data-urlencode "username=admin" --data-urlencode "password=$ADMIN_PASSWORD" \
  "$CAJA_URL/login"
expect_status 200 -b "$JAR" "http://127.0.0.1:$PORT_B/admin/"

CAJA_URL=http://127.0.0.1:$PORT_B
curl -fsS "$CAJA_URL/health"

# One instance stops: the other keeps answering (the proxy sends everyone there).
stop_instance A
expect_status 200 "http://127.0.0.1:$PORT_B/health"
expect_status 200 -b "$JAR" "http://127.0.0.1:$PORT_B/admin/"
echo "simulacro de despliegue: correcto"

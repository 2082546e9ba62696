#!/usr/bin/env bash
# Drill of docs/operations.md, sections 2 and 3: first start, two instances and the worker behind nginx, health,
# metrics and logs. Run by tests/ops/test_docs_drills.py against a fresh PostgreSQL database.
set -euo pipefail
source "$(dirname "$0")/helpers.sh"
doc 0
use_drill_addresses

# --- 2. Install -------------------------------------------------------------------------------------------
doc 2.2
if CAJA_SECRET_KEY= caja check-config 2>"$WORK/check.err"; then
  echo "check-config aceptó una configuración sin CAJA_SECRET_KEY" >&2; exit 1
fi
grep -q "CAJA_SECRET_KEY falta" "$WORK/check.err"
doc 2.4
export CAJA_NEW_USER_SECRET="clave-del-simulacro-$RANDOM"
doc 2.5
doc 2.6
start_proxy "$PORT_HTTP" "$PORT_HTTPS" "$PORT_A" "$PORT_B"
wait_health "$CAJA_URL" ok   # the worker's first backup, verified
doc 2.8

# --- 3. Health, metrics, logs -----------------------------------------------------------------------------
doc 3.1
public=$(curl -fsS "$CAJA_URL/health")
python3 -c 'import json,sys; assert set(json.loads(sys.argv[1])) == {"status", "checked_at"}, sys.argv[1]' "$public"
full=$(curl -fsS -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$CAJA_URL/health")
for process in drill-worker "drill-$PORT_A" "drill-$PORT_B"; do
  grep -q "\"$process\"" <<<"$full" || { echo "/health no muestra el proceso $process" >&2; exit 1; }
done
grep -q '"runner":"drill-worker"' <<<"$full"
doc 3.2
expect_status 401 "$CAJA_URL/metrics"
expect_status 401 -H "Authorization: Bearer otro-token" "$CAJA_URL/metrics/prometheus"
test "$(curl -fsS -o /dev/null -w '%{content_type}' -H "Authorization: Bearer $CAJA_METRICS_TOKEN" \
  "$CAJA_URL/metrics/prometheus")" = "text/plain; version=0.0.4; charset=utf-8"
doc 3.4

# --- 4. One session, two instances: log in through one, keep going on the other ----------------------------
JAR="$WORK/cookies.txt"
curl -fsS -c "$JAR" -b "$JAR" -o /dev/null "http://127.0.0.1:$PORT_A/login"
CSRF=$(awk '$6 == "caja_csrf" {print $7}' "$JAR")
expect_status 303 -c "$JAR" -b "$JAR" -H "x-csrftoken: $CSRF" --data-urlencode "venue_id=1" \
  --data-urlencode "username=admin" --data-urlencode "password=$CAJA_NEW_USER_SECRET" "http://127.0.0.1:$PORT_A/login"
expect_status 200 -b "$JAR" "http://127.0.0.1:$PORT_B/admin/"
systemctl stop "caja@$PORT_A"
expect_status 200 -b "$JAR" "$CAJA_URL/admin/"    # nginx sends everyone to the other instance
expect_status 200 "$CAJA_URL/health"
echo "simulacro de despliegue: correcto"

#!/usr/bin/env bash
# Drill of docs/operations.md, section 7: secret key and metrics token rotated with rolling restarts (nobody
# logged out, no scrape refused), and a register agent's token. Run by tests/ops/test_docs_drills.py.
set -euo pipefail
source "$(dirname "$0")/helpers.sh"
doc 0
use_drill_addresses
URL_A=http://127.0.0.1:$PORT_A
URL_B=http://127.0.0.1:$PORT_B
ADMIN_PASSWORD="clave-del-simulacro-$RANDOM"

caja db upgrade >/dev/null
caja venue create --slug luna --name "Club Luna" >/dev/null
caja venue create --slug sol --name "Club Sol" >/dev/null
CAJA_NEW_USER_SECRET="$ADMIN_PASSWORD" caja user create --venue luna --username admin --name "Administración" --role admin
python3 - <<'PY'
import asyncio, os
from caja_core.db import Database
from caja_core.db.models import CashRegister

async def main():
    db = Database(os.environ["CAJA_DATABASE_URL"])
    async with db.session() as s:
        for venue_id in (1, 2):  # a TOTEM1 in each venue: the command must be told which
            s.add(CashRegister(venue_id=venue_id, code="TOTEM1", name="Tótem 1", register_type="TOTEM"))
    await db.dispose()

asyncio.run(main())
PY
for PORT in $CAJA_PORTS; do systemctl start "caja@$PORT"; done

# A logged-in admin (to check that nobody is logged out by the rotation).
JAR="$WORK/cookies.txt"
curl -fsS -c "$JAR" -b "$JAR" -o /dev/null "$URL_A/login"
CSRF=$(awk '$6 == "caja_csrf" {print $7}' "$JAR")
expect_status 303 -c "$JAR" -b "$JAR" -H "x-csrftoken: $CSRF" \
  --data-urlencode "venue_id=1" --data-urlencode "username=admin" --data-urlencode "password=$ADMIN_PASSWORD" \
  "$URL_A/login"

# --- 7.1 and 7.2, step 1: new secret key and metrics token; the previous token still accepted ------------------
OLD_METRICS_TOKEN=$CAJA_METRICS_TOKEN
export CAJA_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
export CAJA_METRICS_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
export CAJA_METRICS_TOKEN_PREVIOUS=$OLD_METRICS_TOKEN
doc 7.1
scrape() {  # Prometheus with the old token, every 0.2 s, on both instances, until told to stop
  local failed=0
  while [ ! -e "$WORK/stop-scrape" ]; do
    for url in "$URL_A" "$URL_B"; do
      code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $OLD_METRICS_TOKEN" \
        "$url/metrics/prometheus" || true)
      # An instance between its stop and its start refuses the connection (000): Prometheus then scrapes the
      # other one. What must never happen is a refused token (401).
      if [ "$code" = 401 ]; then failed=$((failed + 1)); fi
    done
    sleep 0.2
  done
  echo "$failed" >"$WORK/scrape-401"
}
scrape &
SCRAPER=$!
doc 4.5
touch "$WORK/stop-scrape"
wait "$SCRAPER"
test "$(cat "$WORK/scrape-401")" = 0
for url in "$URL_A" "$URL_B"; do
  expect_status 200 -H "Authorization: Bearer $OLD_METRICS_TOKEN" "$url/metrics/prometheus"
  expect_status 200 -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$url/metrics/prometheus"
  expect_status 200 -b "$JAR" "$url/admin/"
done

# --- 7.2, step 3: the previous token removed --------------------------------------------------------------------
unset CAJA_METRICS_TOKEN_PREVIOUS
doc 4.5
doc 7.2
expect_status 401 -H "Authorization: Bearer $OLD_METRICS_TOKEN" "$URL_A/metrics/prometheus"
expect_status 401 -H "Authorization: Bearer $OLD_METRICS_TOKEN" "$URL_B/metrics/prometheus"
expect_status 200 -b "$JAR" "$URL_B/admin/"

# --- 7.3: a register agent's token --------------------------------------------------------------------------------
if caja register rotate-agent-token TOTEM1 --token-file "$WORK/ambiguous.token" 2>"$WORK/ambiguous.err"; then
  echo "rotate-agent-token eligió un local sin que se lo dijeran" >&2; exit 1
fi
grep -q "indique cuál con --venue (luna, sol)" "$WORK/ambiguous.err"
doc 7.3
test "$(stat -c %a "$AGENT_TOKEN_FILE")" = "600"
FIRST_TOKEN=$(cat "$AGENT_TOKEN_FILE")
doc 7.3
SECOND_TOKEN=$(cat "$AGENT_TOKEN_FILE")
FIRST_TOKEN="$FIRST_TOKEN" SECOND_TOKEN="$SECOND_TOKEN" python3 - <<'PY'
import asyncio, os
from caja_core.db import Database, models  # noqa: F401  (every table known to the ORM)
from caja_core.registers.service import register_for_agent_token

async def main():
    db = Database(os.environ["CAJA_DATABASE_URL"])
    async with db.session() as s:
        assert await register_for_agent_token(s, os.environ["FIRST_TOKEN"]) is None, "old agent token still works"
        register = await register_for_agent_token(s, os.environ["SECOND_TOKEN"])
        assert register is not None and register.code == "TOTEM1" and register.venue_id == 1
    await db.dispose()

asyncio.run(main())
PY
echo "simulacro de rotación de secretos: correcto"

#!/usr/bin/env bash
# Secret rotation drill of docs/operations.md ("Rotar secretos"): metrics token, secret key and agent
# token, with two instances and without a moment where both are down or a scrape is refused.
# Needs: CAJA_DATABASE_URL, CAJA_SECRET_KEY, CAJA_METRICS_TOKEN, CAJA_BACKUP_DIR, WORK, PORT_A, PORT_B.
set -euo pipefail
source "$(dirname "$0")/drill-helpers.sh"
ADMIN_PASSWORD="clave-del-simulacro-$RANDOM"
AGENT_TOKEN_FILE="$WORK/agent.token"
URL_A=http://127.0.0.1:$PORT_A
URL_B=http://127.0.0.1:$PORT_B

caja db upgrade
caja venue create --slug luna --name "Club Luna"
CAJA_NEW_USER_SECRET="$ADMIN_PASSWORD" caja user create --username admin --name "Administración" --role admin
python - <<'PY'
import asyncio, os
from caja_core.db import Database
from caja_core.db.models import CashRegister

async def main():
    db = Database(os.environ["CAJA_DATABASE_URL"])
    async with db.session() as s:
        s.add(CashRegister(venue_id=1, code="TOTEM1", name="Tótem 1", register_type="TOTEM"))
    await db.dispose()

asyncio.run(main())
PY
start_instance A "$PORT_A"
start_instance B "$PORT_B"

# A logged-in admin (to check that nobody is logged out by the rotation).
JAR="$WORK/cookies.txt"
curl -fsS -c "$JAR" -b "$JAR" -o /dev/null "$URL_A/login"
CSRF=$(awk '$6 == "caja_csrf" {print $7}' "$JAR")
expect_status 303 -c "$JAR" -b "$JAR" -H "x-csrftoken: $CSRF" \
  --data-urlencode "venue_id=1" --data-urlencode "username=admin" --data-urlencode "password=$ADMIN_PASSWORD" \
  "$URL_A/login"

# --- Secret key and metrics token, pass 1: new values, the previous metrics token still accepted ----------
OLD_METRICS_TOKEN=$CAJA_METRICS_TOKEN
NEW_METRICS_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
NEW_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')
CAJA_SECRET_KEY="$NEW_SECRET_KEY" caja check-config
# Rolling restart: one instance at a time, the other keeps serving.
restart_instance A "$PORT_A" CAJA_SECRET_KEY="$NEW_SECRET_KEY" \
  CAJA_METRICS_TOKEN="$NEW_METRICS_TOKEN" CAJA_METRICS_TOKEN_PREVIOUS="$OLD_METRICS_TOKEN"
expect_status 200 "$URL_B/health"
expect_status 200 -H "Authorization: Bearer $OLD_METRICS_TOKEN" "$URL_B/metrics/prometheus"
restart_instance B "$PORT_B" CAJA_SECRET_KEY="$NEW_SECRET_KEY" \
  CAJA_METRICS_TOKEN="$NEW_METRICS_TOKEN" CAJA_METRICS_TOKEN_PREVIOUS="$OLD_METRICS_TOKEN"
for url in "$URL_A" "$URL_B"; do
  expect_status 200 -H "Authorization: Bearer $OLD_METRICS_TOKEN" "$url/metrics/prometheus"
  expect_status 200 -H "Authorization: Bearer $NEW_METRICS_TOKEN" "$url/metrics/prometheus"
  expect_status 200 -b "$JAR" "$url/admin/"
done

# --- Pass 2: Prometheus uses the new token; the previous one is removed ------------------------------------
restart_instance A "$PORT_A" CAJA_SECRET_KEY="$NEW_SECRET_KEY" CAJA_METRICS_TOKEN="$NEW_METRICS_TOKEN"
restart_instance B "$PORT_B" CAJA_SECRET_KEY="$NEW_SECRET_KEY" CAJA_METRICS_TOKEN="$NEW_METRICS_TOKEN"
CAJA_METRICS_TOKEN=$NEW_METRICS_TOKEN
CAJA_URL=$URL_A
curl -fsS -o /dev/null -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$CAJA_URL/metrics/prometheus"
expect_status 401 -H "Authorization: Bearer $OLD_METRICS_TOKEN" "$URL_A/metrics/prometheus"
expect_status 401 -H "Authorization: Bearer $OLD_METRICS_TOKEN" "$URL_B/metrics/prometheus"
expect_status 200 -b "$JAR" "$URL_B/admin/"

# --- Agent token -----------------------------------------------------------------------------------------------
caja register rotate-agent-token TOTEM1 --token-file "$AGENT_TOKEN_FILE"
FIRST_TOKEN=$(cat "$AGENT_TOKEN_FILE")
test "$(stat -c %a "$AGENT_TOKEN_FILE")" = "600"
caja register rotate-agent-token TOTEM1 --token-file "$AGENT_TOKEN_FILE"
SECOND_TOKEN=$(cat "$AGENT_TOKEN_FILE")
FIRST_TOKEN="$FIRST_TOKEN" SECOND_TOKEN="$SECOND_TOKEN" python - <<'PY'
import asyncio, os
from caja_core.db import Database, models  # noqa: F401  (every table known to the ORM)
from caja_core.registers.service import register_for_agent_token

async def main():
    db = Database(os.environ["CAJA_DATABASE_URL"])
    async with db.session() as s:
        assert await register_for_agent_token(s, os.environ["FIRST_TOKEN"]) is None, "old agent token still works"
        register = await register_for_agent_token(s, os.environ["SECOND_TOKEN"])
        assert register is not None and register.code == "TOTEM1"
    await db.dispose()

asyncio.run(main())
PY
echo "simulacro de rotación de secretos: correcto"

#!/usr/bin/env bash
# Drill of docs/operations.md, section 4.5: a rolling restart of both instances behind the shipped nginx
# configuration while two cashiers sell without pause through it. Not one request may fail, and every sale the
# cashiers saw paid must be in the database once. Run by tests/ops/test_docs_drills.py.
set -euo pipefail
source "$(dirname "$0")/helpers.sh"
doc 0
use_drill_addresses

caja db upgrade >/dev/null
python3 - >"$WORK/plan.json" <<'PY'
import asyncio, json, os
from sqlalchemy import select
from caja_core.db import Database, models
from caja_core.demo import DEMO_LOGINS, seed_demo

async def main():
    db = Database(os.environ["CAJA_DATABASE_URL"])
    info = await seed_demo(db)
    async with db.session() as s:
        users = {u.username: u.id for u in (await s.execute(select(models.User))).scalars()}
        registers = {r.code: r.id for r in (await s.execute(select(models.CashRegister))).scalars()}
        product = (await s.execute(select(models.Product).order_by(models.Product.id))).scalars().first().id
    await db.dispose()
    pins = {login.username: login.secret for login in DEMO_LOGINS}
    cashiers = [("camila", "PUERTA"), ("diego", "PISTA")]
    print(json.dumps({"venue_id": info.venue_id, "cashiers": [
        {"user_id": users[u], "pin": pins[u], "register_id": registers[code], "product_id": product}
        for u, code in cashiers]}))

asyncio.run(main())
PY
for PORT in $CAJA_PORTS; do systemctl start "caja@$PORT"; done
start_proxy "$PORT_HTTP" "$PORT_HTTPS" "$PORT_A" "$PORT_B"

sales() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["sales"]))' "$WORK/progress.json" 2>/dev/null || echo 0; }
python3 "$DRILLS/traffic.py" "$CAJA_URL" "$CURL_CA_BUNDLE" "$WORK/plan.json" "$WORK/stop" "$WORK/result.json" \
  "$WORK/progress.json" &
TRAFFIC=$!
DRILL_PIDS+=("$TRAFFIC")
until [ "$(sales)" -ge 6 ]; do kill -0 "$TRAFFIC"; sleep 0.2; done   # both cashiers are selling

started=$(date +%s.%N)
doc 4.5
restart_s=$(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$started" "$(date +%s.%N)")
before=$(sales)
until [ "$(sales)" -ge $((before + 6)) ]; do kill -0 "$TRAFFIC"; sleep 0.2; done  # and keep selling after it
touch "$WORK/stop"
wait "$TRAFFIC"

python3 - "$WORK/result.json" "$restart_s" <<'PY'
import json, os, subprocess, sys
result = json.load(open(sys.argv[1]))
paid = subprocess.run(["psql", os.environ["CAJA_DATABASE_URL"], "-tAc", "SELECT id FROM sales WHERE status = 'paid'"],
                      capture_output=True, text=True, check=True).stdout.split()
print(f"reinicio de las dos instancias en {sys.argv[2]} s; {result['requests']} peticiones, "
      f"{len(result['sales'])} ventas, estados {result['by_status']}", file=sys.stderr)
assert not result["failures"], f"peticiones fallidas: {result['failures'][:5]}"
assert sorted(result["sales"]) == sorted(int(p) for p in paid), (len(result["sales"]), len(paid))
PY
echo "simulacro de reinicio sin corte: correcto"

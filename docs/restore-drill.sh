#!/usr/bin/env bash
# Restore drill of docs/operations.md ("Respaldos" and "Simulacro de restauración"), on PostgreSQL.
# Run by the test suite against a fresh database (tests/ops/test_docs_drills.py).
# Needs: CAJA_DATABASE_URL, CAJA_SECRET_KEY, CAJA_METRICS_TOKEN, CAJA_BACKUP_DIR, WORK, PORT_A, PG_ADMIN_URL.
set -euo pipefail
source "$(dirname "$0")/drill-helpers.sh"
CHECK_DB="caja_restore_check_$RANDOM"
PG_CHECK_URL="${PG_ADMIN_URL%/*}/$CHECK_DB"

caja db upgrade
caja venue create --slug luna --name "Club Luna"
start_instance A "$PORT_A"
CAJA_URL=http://127.0.0.1:$PORT_A

# --- A backup while the app runs, and its verification ----------------------------------------------
BACKUP_ID=$(caja backup create | sed -n 's/^Respaldo creado: //p')
test -n "$BACKUP_ID"
caja backup list
caja backup verify "$BACKUP_ID"
caja backup verify latest

# The same dump opens with the standard PostgreSQL tools (if caja itself cannot run).
psql "$PG_ADMIN_URL" -c "CREATE DATABASE $CHECK_DB"
pg_restore --no-owner --no-privileges -d "$PG_CHECK_URL" "$CAJA_BACKUP_DIR/$BACKUP_ID.dump"
psql "$PG_CHECK_URL" -tAc "SELECT count(*) FROM venues"
test "$(psql "$PG_CHECK_URL" -tAc "SELECT count(*) FROM venues")" = "1"
psql "$PG_ADMIN_URL" -c "DROP DATABASE $CHECK_DB"

# A damaged copy is detected (checksum) and never restored.
cp "$CAJA_BACKUP_DIR/$BACKUP_ID.dump" "$WORK/good.dump"
printf 'XyZ!' | dd of="$CAJA_BACKUP_DIR/$BACKUP_ID.dump" bs=1 seek=200 conv=notrunc status=none
if caja backup verify "$BACKUP_ID" 2>"$WORK/verify.err"; then
  echo "la verificación no detectó el archivo dañado" >&2; exit 1
fi
grep -q "SHA-256" "$WORK/verify.err"
cp "$WORK/good.dump" "$CAJA_BACKUP_DIR/$BACKUP_ID.dump"
caja backup verify "$BACKUP_ID"

# --- Something goes wrong after the backup; restore it --------------------------------------------------
caja venue create --slug sol --name "Club Sol"
stop_instance A
caja backup restore "$BACKUP_ID" --yes
caja db status --check
start_instance A "$PORT_A"
curl -fsS "$CAJA_URL/health"
# The venue created after the backup is gone; the one before it is there.
caja venue create --slug sol --name "Club Sol"
if caja venue create --slug luna --name "Club Luna" 2>/dev/null; then
  echo "la restauración perdió el local que existía antes del respaldo" >&2; exit 1
fi

# --- Retention -------------------------------------------------------------------------------------------
caja backup prune
echo "simulacro de restauración: correcto"

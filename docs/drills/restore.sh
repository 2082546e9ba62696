#!/usr/bin/env bash
# Drill of docs/operations.md, section 5: backups while the app runs, their verification, a damaged file and a
# damaged manifest, retention, and the monthly restore drill (with caja, and with PostgreSQL's own tools).
# Run by tests/ops/test_docs_drills.py against a fresh PostgreSQL database.
set -euo pipefail
source "$(dirname "$0")/helpers.sh"
doc 0
use_drill_addresses

caja db upgrade >/dev/null
caja venue create --slug luna --name "Club Luna" >/dev/null
for PORT in $CAJA_PORTS; do systemctl start "caja@$PORT"; done
systemctl start caja-worker

# --- 5. Backups while the app runs --------------------------------------------------------------------------
doc 5
test -n "$BACKUP_ID" && test -f "$CAJA_BACKUP_DIR/$BACKUP_ID.dump"

# A damaged data file is caught by its checksum and never restored.
cp "$CAJA_BACKUP_DIR/$BACKUP_ID.dump" "$WORK/good.dump"
printf 'XyZ!' | dd of="$CAJA_BACKUP_DIR/$BACKUP_ID.dump" bs=1 seek=200 conv=notrunc status=none
if caja backup verify "$BACKUP_ID" 2>"$WORK/verify.err"; then
  echo "la verificación no detectó el archivo dañado" >&2; exit 1
fi
grep -q "SHA-256" "$WORK/verify.err"
cp "$WORK/good.dump" "$CAJA_BACKUP_DIR/$BACKUP_ID.dump"

# A damaged manifest is listed as damaged, and `verify latest` says so instead of checking an older one.
DAMAGED_ID=$(caja backup create --no-verify | sed -n 's/^Respaldo creado: //p')
head -c 30 "$CAJA_BACKUP_DIR/$DAMAGED_ID.json" >"$WORK/torn.json" && mv "$WORK/torn.json" "$CAJA_BACKUP_DIR/$DAMAGED_ID.json"
caja backup list | grep "$DAMAGED_ID" | grep DAÑADO >/dev/null
if caja backup verify latest 2>"$WORK/latest.err"; then
  echo "verify latest pasó por alto el respaldo dañado" >&2; exit 1
fi
grep -q "$DAMAGED_ID.json está dañado" "$WORK/latest.err"
rm "$CAJA_BACKUP_DIR/$DAMAGED_ID".*

# --- 5.1 Something goes wrong after the backup; restore it -------------------------------------------------
caja venue create --slug sol --name "Club Sol" >/dev/null
if caja backup restore "$BACKUP_ID" --yes 2>"$WORK/live.err"; then
  echo "restore reemplazó la base con instancias en marcha" >&2; exit 1
fi
grep -q "Deténgalos antes de restaurar" "$WORK/live.err"
doc 5.1
# The venue created after the backup is gone; the one before it is there.
caja venue create --slug sol --name "Club Sol" >/dev/null
if caja venue create --slug luna --name "Club Luna" 2>/dev/null; then
  echo "la restauración perdió el local que existía antes del respaldo" >&2; exit 1
fi
caja backup list | grep pre-restore >/dev/null
echo "simulacro de restauración: correcto"

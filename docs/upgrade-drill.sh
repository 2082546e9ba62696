#!/usr/bin/env bash
# Upgrade-with-rollback drill of docs/operations.md ("Actualizar con vuelta atrás"), on PostgreSQL.
# The "previous version" is the schema one migration behind head. Needs: CAJA_DATABASE_URL,
# CAJA_SECRET_KEY, CAJA_METRICS_TOKEN, CAJA_BACKUP_DIR, WORK, PORT_A.
set -euo pipefail
source "$(dirname "$0")/drill-helpers.sh"
PREVIOUS_REVISION=$(python -c 'from caja_core.db import migrate; import alembic.script as s; \
c = s.ScriptDirectory.from_config(migrate.alembic_config("sqlite://")); \
print(c.get_revision(c.get_current_head()).down_revision or "base")')
HEAD_REVISION=$(python -c 'from caja_core.db import migrate; print(migrate.head_revision())')

# The server runs the previous version, with data.
caja db upgrade --revision "$PREVIOUS_REVISION" --no-backup
if [ "$PREVIOUS_REVISION" = "base" ]; then
  # With a single migration the "previous version" is an empty schema: start from the head instead
  # and exercise the rollback path by going back to it.
  caja db upgrade --no-backup
fi
caja venue create --slug luna --name "Club Luna"

# --- Upgrade ----------------------------------------------------------------------------------------------
BACKUP_ID=$(caja backup create | sed -n 's/^Respaldo creado: //p')
caja db status
caja db upgrade
caja db upgrade
caja db status --check

# --- Rollback, option 1: the schema goes back one migration; data is kept ----------------------------------
caja db downgrade "$PREVIOUS_REVISION"
caja db status
caja db upgrade
caja db status --check

# --- Rollback, option 2: the whole database goes back to the backup taken before the upgrade --------------
caja venue create --slug sol --name "Club Sol"
caja backup restore "$BACKUP_ID" --yes
caja db upgrade
caja db status --check
start_instance A "$PORT_A"
CAJA_URL=http://127.0.0.1:$PORT_A
curl -fsS "$CAJA_URL/health"
curl -fsS -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$CAJA_URL/health" | grep -q "\"current\":\"$HEAD_REVISION\""
echo "simulacro de actualización: correcto"

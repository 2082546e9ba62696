#!/usr/bin/env bash
# Drill of docs/operations.md, section 6: from the schema of 0.1.0 (CHANGELOG.md) to this version, the rolling
# restart, the schema rollback (data kept) and the restore of the backup taken before. Installing another
# version's wheels (the `console` steps) is the one part a drill cannot do: between the steps it migrates again.
# Run by tests/ops/test_docs_drills.py against a fresh PostgreSQL database.
set -euo pipefail
source "$(dirname "$0")/helpers.sh"
doc 0
use_drill_addresses
PREVIOUS_RELEASE_SCHEMA=$(sed -n 's/^Schema: `\([^`]*\)`.*/\1/p' "$ROOT/CHANGELOG.md" | sed -n 2p)
test "$PREVIOUS_RELEASE_SCHEMA" = 0001

# The server runs the previous release: its schema, with data.
caja db upgrade --revision "$PREVIOUS_RELEASE_SCHEMA" --no-backup >/dev/null
caja venue create --slug luna --name "Club Luna" >/dev/null
for PORT in $CAJA_PORTS; do systemctl start "caja@$PORT"; done
systemctl start caja-worker

# --- 6.1–6.3: upgrade -----------------------------------------------------------------------------------------
doc 6.1
test "$PREVIOUS_REVISION" = "$PREVIOUS_RELEASE_SCHEMA"
doc 6.3
caja db upgrade | grep "nada que hacer" >/dev/null
doc 4.5
HEAD_REVISION=$(python3 -c 'from caja_core.db import migrate; print(migrate.head_revision())')
curl -fsS -H "Authorization: Bearer $CAJA_METRICS_TOKEN" "$CAJA_URL/health" | grep "\"current\":\"$HEAD_REVISION\"" >/dev/null

# A sale-day's data after the upgrade.
caja venue create --slug sol --name "Club Sol" >/dev/null

# --- 6.4: the schema goes back; the sales stay ----------------------------------------------------------------
# Under live instances it refuses and changes nothing, even with --destroy-data; without it, it refuses to drop
# what this version recorded (the ticket series the instances reserved).
if caja db downgrade "$PREVIOUS_REVISION" --destroy-data 2>"$WORK/live.err"; then
  echo "downgrade con instancias en marcha" >&2; exit 1
fi
grep -q "Deténgalos antes de revertir" "$WORK/live.err"
systemctl stop caja-worker $(printf 'caja@%s ' $CAJA_PORTS)
if caja db downgrade "$PREVIOUS_REVISION" 2>"$WORK/data.err"; then
  echo "downgrade borró datos sin --destroy-data" >&2; exit 1
fi
grep -q "borraría datos: .*ticket_series" "$WORK/data.err"
caja db status | grep "Versión actual: $HEAD_REVISION" >/dev/null
doc 6.4
caja db status | grep "Versión actual: $PREVIOUS_REVISION" >/dev/null
if caja venue create --slug sol --name "Club Sol" 2>/dev/null; then
  echo "la vuelta atrás del esquema perdió los datos anteriores a la actualización" >&2; exit 1
fi

# --- 6.5: or the backup of 6.1 comes back ---------------------------------------------------------------------
caja db upgrade >/dev/null   # (the drill keeps this version installed: back to its schema)
doc 6.5
caja db status | grep "Versión actual: $PREVIOUS_REVISION" >/dev/null
caja venue create --slug sol --name "Club Sol" >/dev/null   # created after the backup: gone, so possible again
caja db upgrade >/dev/null
for PORT in $CAJA_PORTS; do systemctl start "caja@$PORT"; done
curl -fsS "$CAJA_URL/health"
echo "simulacro de actualización: correcto"

"""The operator's commands, run as the operator runs them (a subprocess with CAJA_* variables)."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from caja_core.db import migrate

CAJA = str(Path(sys.executable).parent / "caja")
SECRET = "k7Q2vX9pL4mN8rT1wY6zB3cD5fG0hJ2sA9uE"


def run(*args, env=None, input=None, timeout=120):
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    base.pop("PYTHONDONTWRITEBYTECODE", None)  # let the first run cache bytecode: each later start is fast
    base.update(env or {})
    return subprocess.run(
        [CAJA, *args], capture_output=True, text=True, env=base, input=input, timeout=timeout, check=False
    )


@pytest.fixture
def sqlite_env(tmp_path):
    return {
        "CAJA_SECRET_KEY": SECRET,
        "CAJA_DATABASE_URL": f"sqlite:///{tmp_path}/data/caja.db",
        "CAJA_BACKUP_DIR": str(tmp_path / "backups"),
    }


@pytest.fixture
async def pg_env(tmp_path, pg_test_database):
    admin = pg_test_database.admin_url
    name = f"caja_cli_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin).set(database=name, drivername="postgresql").render_as_string(hide_password=False)
    yield {"CAJA_SECRET_KEY": SECRET, "CAJA_DATABASE_URL": url, "CAJA_BACKUP_DIR": str(tmp_path / "backups")}
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


@pytest.mark.parametrize("which", ["sqlite", "postgres"])
def test_db_status_upgrade_downgrade(which, request):
    env = request.getfixturevalue("sqlite_env" if which == "sqlite" else "pg_env")
    head = migrate.head_revision()

    status = run("db", "status", "--check", env=env)
    assert status.returncode == 1, status.stderr
    pending = migrate.pending_revisions(None)
    assert "Versión actual: (vacía)" in status.stdout
    assert f"Pendientes ({len(pending)}): {', '.join(pending)}" in status.stdout

    first = run("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert f"(vacía) → {head}" in first.stdout and "no hace falta respaldo" in first.stdout
    again = run("db", "upgrade", env=env)  # idempotent: nothing to do, no backup taken
    assert again.returncode == 0 and "nada que hacer" in again.stdout

    status = run("db", "status", "--check", env=env)
    assert status.returncode == 0 and f"Versión actual: {head}" in status.stdout
    assert "al día" in status.stdout

    down = run("db", "downgrade", "base", env=env)
    assert down.returncode == 0, down.stderr
    assert "Respaldo previo:" in down.stdout and f"{head} → (vacía)" in down.stdout
    assert "pre-downgrade" in run("backup", "list", env=env).stdout

    status = run("db", "status", env=env)
    assert "Versión actual: (vacía)" in status.stdout
    assert run("db", "upgrade", "--no-backup", env=env).returncode == 0
    assert f"Versión actual: {head}" in run("db", "status", env=env).stdout


def test_commands_on_a_database_without_schema_say_what_to_do(sqlite_env):
    missing = run("venue", "create", "--slug", "luna", "--name", "Club Luna", env=sqlite_env)
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "No existe la base SQLite" in missing.stderr
    assert "caja db upgrade" in missing.stderr
    path = Path(sqlite_env["CAJA_DATABASE_URL"].removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True)
    path.touch()  # a file, but no schema
    empty = run("venue", "create", "--slug", "luna", "--name", "Club Luna", env=sqlite_env)
    assert empty.returncode == 2
    assert "Traceback" not in empty.stderr and "caja db status" in empty.stderr


def test_backup_create_list_verify_restore_cli(sqlite_env):
    assert run("db", "upgrade", env=sqlite_env).returncode == 0
    assert run("venue", "create", "--slug", "luna", "--name", "Club Luna", env=sqlite_env).returncode == 0
    user = run(
        "user",
        "create",
        "--username",
        "admin",
        "--name",
        "Administradora",
        "--role",
        "admin",
        env={**sqlite_env, "CAJA_NEW_USER_SECRET": "una-clave-larga"},
    )
    assert user.returncode == 0 and "Usuario creado: admin" in user.stdout, user.stderr
    weak = run(
        "user",
        "create",
        "--username",
        "cajero",
        "--name",
        "Cajero",
        "--role",
        "cashier",
        env={**sqlite_env, "CAJA_NEW_USER_SECRET": "12"},
    )
    assert weak.returncode == 2 and "PIN" in weak.stderr
    created = run("backup", "create", env=sqlite_env)
    assert created.returncode == 0, created.stderr
    backup_id = re.search(r"Respaldo creado: (\S+)", created.stdout).group(1)
    assert "Verificación" in created.stdout and "correcta" in created.stdout
    assert backup_id in run("backup", "list", env=sqlite_env).stdout
    assert run("backup", "verify", backup_id, env=sqlite_env).returncode == 0

    assert run("venue", "create", "--slug", "sol", "--name", "Club Sol", env=sqlite_env).returncode == 0
    refused = run("backup", "restore", backup_id, env=sqlite_env, input="n\n")
    assert refused.returncode == 1
    restored = run("backup", "restore", backup_id, "--yes", env=sqlite_env)
    assert restored.returncode == 0, restored.stderr
    assert "coinciden con el manifiesto" in restored.stdout
    again = run("venue", "create", "--slug", "sol", "--name", "Club Sol", env=sqlite_env)
    assert again.returncode == 0, "the restored database no longer has the venue created after the backup"

    data = Path(sqlite_env["CAJA_BACKUP_DIR"]) / f"{backup_id}.sqlite3"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    bad = run("backup", "verify", backup_id, env=sqlite_env)
    assert bad.returncode == 1 and "FALLÓ" in bad.stderr and "SHA-256" in bad.stderr
    assert run("backup", "restore", backup_id, "--yes", env=sqlite_env).returncode == 2


def test_check_config_reports_every_problem_on_its_own_line():
    result = run(
        "check-config",
        env={
            "CAJA_ENV": "production",
            "CAJA_PORT": "ochenta",
            "CAJA_SECRET_KEY": "changeme",
            "CAJA_DATABASE_URL": "mysql://x/y",
            "CAJA_TIMEZONE": "America/Springfield",
        },
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "no se inició nada" in lines[0]
    problems = lines[1:]
    assert any(p.startswith("  - CAJA_PORT='ochenta' no es válido: se espera puerto HTTP") for p in problems)
    assert any("CAJA_SECRET_KEY es débil" in p for p in problems)
    assert any("CAJA_DATABASE_URL no es válido" in p for p in problems)
    assert any("CAJA_TIMEZONE='America/Springfield'" in p for p in problems)
    assert any("CAJA_SECURE_COOKIES" in p for p in problems)
    assert "changeme" not in result.stdout


def test_secret_key_required_outside_demo_and_weak_ones_refused_in_production():
    missing = run("check-config", env={"CAJA_ENV": "development"})
    assert missing.returncode == 2 and "CAJA_SECRET_KEY falta" in missing.stderr
    assert run("check-config", env={"CAJA_ENV": "demo"}).returncode == 0
    for weak in ("secret", "a" * 40, "demo-only-secret-key-not-for-production", "short-Key-1"):
        result = run(
            "check-config", env={"CAJA_ENV": "production", "CAJA_SECRET_KEY": weak, "CAJA_SECURE_COOKIES": "1"}
        )
        assert result.returncode == 2 and "CAJA_SECRET_KEY es débil" in result.stderr, weak
    good = run(
        "check-config",
        env={
            "CAJA_ENV": "production",
            "CAJA_SECRET_KEY": SECRET,
            "CAJA_SECURE_COOKIES": "1",
            "CAJA_METRICS_TOKEN": "m" + SECRET[:20],
        },
    )
    assert good.returncode == 0, good.stderr
    assert SECRET not in good.stdout and SECRET[:20] not in good.stdout


def test_serve_with_bad_settings_exits_2_and_starts_nothing(tmp_path):
    result = run(
        "serve",
        env={
            "CAJA_ENV": "production",
            "CAJA_SECRET_KEY": "changeme",
            "CAJA_PORT": "99999",
            "CAJA_DATABASE_URL": f"sqlite:///{tmp_path}/caja.db",
        },
        timeout=60,
    )
    assert result.returncode == 2
    assert "CAJA_SECRET_KEY es débil" in result.stderr
    assert "CAJA_PORT=99999 no es válido" in result.stderr
    assert not (tmp_path / "caja.db").exists()  # nothing started, nothing created


PROBE_MIGRATION = '''"""A migration that exists only in this test."""
import sqlalchemy as sa
from alembic import op

revision = "9999_ops_probe"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("ops_probe", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("ops_probe")
'''


@pytest.mark.parametrize("which", ["sqlite", "postgres"])
def test_upgrade_with_a_pending_migration_backs_up_first_and_downgrade_returns(which, request, tmp_path):
    import shutil

    env = request.getfixturevalue("sqlite_env" if which == "sqlite" else "pg_env")
    head = migrate.head_revision()
    assert run("db", "upgrade", env=env).returncode == 0
    assert run("venue", "create", "--slug", "luna", "--name", "Club Luna", env=env).returncode == 0

    # The next release: the same history plus one migration.
    root = Path(migrate.alembic_dir()).parent
    newer = tmp_path / "release"
    shutil.copytree(root / "alembic", newer / "alembic", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "alembic.ini", newer / "alembic.ini")
    (newer / "alembic" / "versions" / "9999_ops_probe.py").write_text(PROBE_MIGRATION.format(head=head))
    newer_env = {**env, "CAJA_ALEMBIC_DIR": str(newer / "alembic")}

    status = run("db", "status", "--check", env=newer_env)
    assert status.returncode == 1 and "Pendientes (1): 9999_ops_probe" in status.stdout
    up = run("db", "upgrade", env=newer_env)
    assert up.returncode == 0, up.stderr
    assert "Respaldo previo:" in up.stdout and f"{head} → 9999_ops_probe" in up.stdout
    listing = run("backup", "list", env=env).stdout
    assert "pre-upgrade" in listing and head in listing  # the backup holds the schema before the upgrade
    assert "nada que hacer" in run("db", "upgrade", env=newer_env).stdout

    down = run("db", "downgrade", head, "--no-backup", env=newer_env)
    assert down.returncode == 0 and f"9999_ops_probe → {head}" in down.stdout, down.stderr
    assert run("backup", "list", env=env).stdout.count("caja-") == 1  # --no-backup took none
    assert run("db", "status", "--check", env=env).returncode == 0  # back on this release's head


def _beat_as_live_instance(url: str, name: str = "srv1-8001") -> None:
    """What a running `caja serve` does every few seconds: its heartbeat row."""
    import asyncio

    from caja_core.clock import utcnow
    from caja_core.db.engine import Database
    from caja_core.ops.heartbeats import write_beat

    async def beat():
        db = Database(url)
        try:
            await write_beat(db, name=name, kind="app", state="serving", started_at=utcnow(), workers={})
        finally:
            await db.dispose()

    asyncio.run(beat())


@pytest.mark.parametrize("which", ["sqlite", "postgres"])
def test_downgrade_that_drops_data_asks_for_destroy_data_and_never_runs_under_live_instances(which, request):
    env = request.getfixturevalue("sqlite_env" if which == "sqlite" else "pg_env")
    assert run("db", "upgrade", env=env).returncode == 0
    assert run("venue", "create", "--slug", "luna", "--name", "Club Luna", env=env).returncode == 0
    head = migrate.head_revision()

    # From the only revision to "base" would drop every table, venues included: refused, nothing changed.
    refused = run("db", "downgrade", "base", env=env)
    assert refused.returncode == 2, refused.stdout
    assert "borraría datos" in refused.stderr and "venues (1 filas)" in refused.stderr
    assert "--destroy-data" in refused.stderr and "Traceback" not in refused.stderr
    assert f"Versión actual: {head}" in run("db", "status", env=env).stdout
    assert run("backup", "list", env=env).stdout.startswith("No hay respaldos")  # refused before any work

    # A relative target is a revision, not an option (it goes back one migration, or says what it would
    # destroy); a name that is not a revision says which ones exist.
    relative = run("db", "downgrade", "-1", env=env)
    assert relative.returncode == 0 or "borraría datos" in relative.stderr, relative.stderr
    assert "option" not in relative.stderr.lower()
    assert run("db", "upgrade", "--no-backup", env=env).returncode == 0
    unknown = run("db", "downgrade", "0001_initial_schema", env=env)
    assert unknown.returncode == 2 and "no existe" in unknown.stderr and "0001" in unknown.stderr

    # With an instance live on the database, not even --destroy-data goes ahead.
    _beat_as_live_instance(env["CAJA_DATABASE_URL"])
    live = run("db", "downgrade", "base", "--destroy-data", env=env)
    assert live.returncode == 2 and "srv1-8001" in live.stderr and "Deténgalos" in live.stderr
    assert f"Versión actual: {head}" in run("db", "status", env=env).stdout


def test_downgrade_with_destroy_data_backs_up_then_drops(sqlite_env):
    env = sqlite_env
    assert run("db", "upgrade", env=env).returncode == 0
    assert run("venue", "create", "--slug", "luna", "--name", "Club Luna", env=env).returncode == 0
    done = run("db", "downgrade", "base", "--destroy-data", env=env)
    assert done.returncode == 0, done.stderr
    assert "Respaldo previo:" in done.stdout and "→ (vacía)" in done.stdout
    assert "pre-downgrade" in run("backup", "list", env=env).stdout


def test_restore_refuses_under_live_instances_unless_forced(sqlite_env):
    env = sqlite_env
    assert run("db", "upgrade", env=env).returncode == 0
    created = run("backup", "create", env=env)
    backup_id = re.search(r"Respaldo creado: (\S+)", created.stdout).group(1)
    _beat_as_live_instance(env["CAJA_DATABASE_URL"])
    refused = run("backup", "restore", backup_id, "--yes", env=env)
    assert refused.returncode == 2 and "srv1-8001" in refused.stderr and "--force" in refused.stderr
    assert "pre-restore" not in run("backup", "list", env=env).stdout  # nothing was touched
    forced = run("backup", "restore", backup_id, "--yes", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    safety = re.search(r"Respaldo de seguridad de la base anterior: (\S+)", forced.stdout).group(1)
    listing = run("backup", "list", env=env).stdout
    assert safety in listing and "pre-restore" in listing
    assert re.search(rf"{safety}.*\bsí$", listing, re.M), listing  # the safety copy was verified first


PROBE_COLUMN_MIGRATION = '''"""A migration that exists only in this test: a setting column with a default."""
import sqlalchemy as sa
from alembic import op

revision = "9999_ops_probe_column"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("venues") as batch:
        batch.add_column(sa.Column("probe_setting", sa.String(40), nullable=False, server_default="{{}}"))


def downgrade():
    with op.batch_alter_table("venues") as batch:
        batch.drop_column("probe_setting")
'''


@pytest.mark.parametrize("which", ["sqlite", "postgres"])
def test_downgrade_counts_values_other_than_the_default_as_data(which, request, tmp_path):
    import shutil

    env = request.getfixturevalue("sqlite_env" if which == "sqlite" else "pg_env")
    head = migrate.head_revision()
    root = Path(migrate.alembic_dir()).parent
    newer = tmp_path / "release"
    shutil.copytree(root / "alembic", newer / "alembic", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "alembic.ini", newer / "alembic.ini")
    (newer / "alembic" / "versions" / "9999_ops_probe_column.py").write_text(PROBE_COLUMN_MIGRATION.format(head=head))
    newer_env = {**env, "CAJA_ALEMBIC_DIR": str(newer / "alembic")}
    assert run("db", "upgrade", env=newer_env).returncode == 0
    assert run("venue", "create", "--slug", "luna", "--name", "Club Luna", env=newer_env).returncode == 0

    # Every venue still has the column's default ({}): going back loses nothing.
    assert run("db", "downgrade", head, "--no-backup", env=newer_env).returncode == 0
    assert run("db", "upgrade", "--no-backup", env=newer_env).returncode == 0

    import asyncio

    from caja_core.db.engine import Database

    async def set_value():
        db = Database(env["CAJA_DATABASE_URL"])
        try:
            async with db.session() as s:
                await s.execute(text("UPDATE venues SET probe_setting = 'modo-noche'"))
        finally:
            await db.dispose()

    asyncio.run(set_value())
    refused = run("db", "downgrade", head, "--no-backup", env=newer_env)
    assert refused.returncode == 2 and "venues.probe_setting (1 valores)" in refused.stderr, refused.stderr


def test_check_config_warns_about_misspelled_names_and_says_nothing_false_about_empty_tokens(tmp_path):
    result = run(
        "check-config",
        env={"CAJA_SECRET_KEY": SECRET, "CAJA_BACKUP_INTERVAL_HOUR": "1", "CAJA_METRICS_TOKEN": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "¿quiso decir CAJA_BACKUP_INTERVAL_HOURS?" in result.stderr
    empty = run("check-config", env={"CAJA_SECRET_KEY": "", "CAJA_METRICS_TOKEN": ""})
    assert empty.returncode == 2 and "CAJA_SECRET_KEY falta" in empty.stderr
    assert "igual" not in empty.stderr


def test_migrations_say_one_line_not_alembics_narration(sqlite_env):
    result = run("db", "upgrade", env=sqlite_env)
    assert result.returncode == 0, result.stderr
    assert "alembic" not in (result.stdout + result.stderr).lower()
    assert "Running upgrade" not in result.stderr


@pytest.mark.parametrize("which", ["postgres"])
def test_verify_with_a_role_that_cannot_create_databases_says_so_in_one_line(which, pg_env):
    import asyncio

    from caja_core.db.engine import Database

    env = dict(pg_env)
    assert run("db", "upgrade", env=env).returncode == 0
    created = run("backup", "create", "--no-verify", env=env)
    assert created.returncode == 0, created.stderr
    role = f"caja_nocreatedb_{uuid.uuid4().hex[:6]}"
    url = make_url(env["CAJA_DATABASE_URL"])

    async def make_role(sql: str) -> None:
        db = Database(url.render_as_string(hide_password=False))
        try:
            async with db.session() as s:
                await s.execute(text(sql))
        finally:
            await db.dispose()

    asyncio.run(make_role(f'CREATE ROLE "{role}" LOGIN NOCREATEDB'))
    try:
        limited = {**env, "CAJA_DATABASE_URL": url.set(username=role).render_as_string(hide_password=False)}
        checked = run("backup", "verify", "latest", env=limited)
        assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked.stderr
        assert "CREATEDB" in checked.stderr and checked.stderr.strip().count("\n") == 0, checked.stderr
    finally:
        asyncio.run(make_role(f'DROP ROLE "{role}"'))


def test_backup_list_names_a_folder_that_is_a_file_or_missing(sqlite_env, tmp_path):
    """An operator who points --dir at a backup's file (or mistypes the folder) is told so, not "no backups"."""
    afile = tmp_path / "caja-respaldo.sqlite3"
    afile.write_bytes(b"x")
    listing = run("backup", "list", "--dir", str(afile), env=sqlite_env)
    assert listing.returncode == 2 and "no es una carpeta" in listing.stderr and "Traceback" not in listing.stderr
    missing = run("backup", "list", "--dir", str(tmp_path / "respaldoz"), env=sqlite_env)
    assert missing.returncode == 0 and "no existe" in missing.stdout

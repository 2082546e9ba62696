"""The operations guide is true: its drills (docs/*-drill.sh) run against a fresh PostgreSQL database with
real `caja serve` processes, and every command the guide shows is run by one of them."""

import os
import re
import secrets
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DRILLS = sorted(p.name for p in DOCS.glob("*-drill.sh"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def drill_database(pg_test_database):
    admin = pg_test_database.admin_url
    name = f"caja_drill_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    plain = make_url(admin).set(drivername="postgresql")
    yield (plain.set(database=name).render_as_string(hide_password=False),
           plain.set(database="postgres").render_as_string(hide_password=False))
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


def test_there_are_drills():
    assert {"deploy-drill.sh", "restore-drill.sh", "upgrade-drill.sh", "rotate-secrets-drill.sh"} <= set(DRILLS)


@pytest.mark.slow
@pytest.mark.parametrize("drill", DRILLS)
def test_drill_runs(drill, drill_database, tmp_path):
    url, admin_url = drill_database
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "WORK": str(tmp_path), "PORT_A": str(free_port()), "PORT_B": str(free_port()),
        "PG_ADMIN_URL": admin_url, "CAJA_DATABASE_URL": url, "CAJA_ENV": "development",
        "CAJA_SECRET_KEY": secrets.token_urlsafe(48), "CAJA_METRICS_TOKEN": secrets.token_urlsafe(24),
        "CAJA_BACKUP_DIR": str(tmp_path / "backups"), "CAJA_LOG_LEVEL": "WARNING",
    })
    result = subprocess.run(["bash", str(DOCS / drill)], env=env, capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, f"{drill} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "correcto" in result.stdout.splitlines()[-1]

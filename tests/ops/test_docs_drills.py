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
    yield (
        plain.set(database=name).render_as_string(hide_password=False),
        plain.set(database="postgres").render_as_string(hide_password=False),
    )
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
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "WORK": str(tmp_path),
            "PORT_A": str(free_port()),
            "PORT_B": str(free_port()),
            "PG_ADMIN_URL": admin_url,
            "CAJA_DATABASE_URL": url,
            "CAJA_ENV": "development",
            "CAJA_SECRET_KEY": secrets.token_urlsafe(48),
            "CAJA_METRICS_TOKEN": secrets.token_urlsafe(24),
            "CAJA_BACKUP_DIR": str(tmp_path / "backups"),
            "CAJA_LOG_LEVEL": "WARNING",
        }
    )
    result = subprocess.run(
        ["bash", str(DOCS / drill)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, f"{drill} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "correcto" in result.stdout.splitlines()[-1]


def fenced_blocks(markdown: str) -> list[tuple[str, list[str]]]:
    blocks, lang, lines = [], None, []
    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            if lang is None:
                lang, lines = stripped[3:].strip() or "text", []
            else:
                blocks.append((lang, lines))
                lang = None
        elif lang is not None:
            lines.append(stripped)
    assert lang is None, "unclosed code block"
    return blocks


def normalise(line: str) -> str:
    return re.sub(r"\s+", " ", line.strip())


def test_every_command_of_the_guide_is_run_by_a_drill():
    guide = (DOCS / "operations.md").read_text()
    drill_lines = [normalise(line) for name in DRILLS for line in (DOCS / name).read_text().splitlines()]
    blocks = fenced_blocks(guide)
    commands = [
        normalise(line)
        for lang, lines in blocks
        if lang == "bash"
        for line in lines
        if line and not line.startswith("#")
    ]
    assert len(commands) >= 25
    missing = [c for c in commands if not any(c in line for line in drill_lines)]
    assert not missing, f"commands of docs/operations.md that no drill runs: {missing}"
    assert {lang for lang, _ in blocks} <= {"bash", "console", "json", "yaml", "text"}


def test_the_guide_lists_every_setting_and_names_files_that_exist():
    from caja_core.settings import VARIABLES

    guide = (DOCS / "operations.md").read_text()
    for key in VARIABLES:
        assert f"`{key}`" in guide or f"{key}`" in guide, key
    for path in set(re.findall(r"\bdeploy/[\w./@-]+[\w@]", guide)):
        assert (ROOT / path).exists(), path
    for script in re.findall(r"docs/[\w*-]+\.sh", guide):
        assert list(ROOT.glob(script)), script

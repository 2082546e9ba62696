"""The operations guide is true: its drills (docs/drills/*.sh) run every `bash` block of docs/operations.md
verbatim against a fresh PostgreSQL database, real `caja serve` and `caja worker` processes and a real nginx,
so a wrong command in the guide fails the suite."""

import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from .netkit import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GUIDE = DOCS / "operations.md"
DRILLS = sorted(p.name for p in (DOCS / "drills").glob("*.sh") if p.name != "helpers.sh")

sys.path.insert(0, str(DOCS / "drills"))
from doc_blocks import blocks  # noqa: E402


def guide_blocks() -> list[tuple[str, int, str, list[str]]]:
    return blocks(GUIDE.read_text())


def sections_called(drill: str) -> set[str]:
    return set(re.findall(r"^\s*doc ([\d.]+)\s*$", (DOCS / "drills" / drill).read_text(), re.M))


@pytest.fixture
async def drill_database(pg_test_database):
    admin = pg_test_database.admin_url
    name = f"caja_drill_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    plain = make_url(admin).set(drivername="postgresql")
    database_url = plain.set(database=name).render_as_string(hide_password=False)
    yield database_url, database_url.rsplit("/", 1)[0]
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


def test_there_are_drills():
    assert DRILLS == ["deploy.sh", "restart.sh", "restore.sh", "rotate.sh", "upgrade.sh"]


@pytest.mark.slow
@pytest.mark.parametrize("drill", DRILLS)
def test_drill_runs(drill, drill_database, tmp_path):
    url, server = drill_database
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAJA_", "PG", "CURL_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "WORK": str(tmp_path),
            "PORT_A": str(free_port()),
            "PORT_B": str(free_port()),
            "PORT_HTTP": str(free_port()),
            "PORT_HTTPS": str(free_port()),
            "DRILL_PG_SERVER": server,
            # What /etc/caja/caja.env holds on a server.
            "CAJA_DATABASE_URL": url,
            "CAJA_ENV": "development",
            "CAJA_SECRET_KEY": secrets.token_urlsafe(48),
            "CAJA_METRICS_TOKEN": secrets.token_urlsafe(24),
            "CAJA_BACKUP_DIR": str(tmp_path / "backups"),
            "CAJA_DATA_DIR": str(tmp_path / "data"),
            "CAJA_LOG_LEVEL": "INFO",
        }
    )
    (tmp_path / "data").mkdir()
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(DOCS / "drills" / drill)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"{drill} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert "correcto" in result.stdout.splitlines()[-1]
    print(f"{drill}: {elapsed:.0f} s")
    # Every block of every section the drill calls was run (the drill did not stop half-way).
    ran = set((tmp_path / "doc-blocks-run.txt").read_text().split())
    expected = {f"{s}#{i}" for s, i, lang, _ in guide_blocks() if lang == "bash" and s in sections_called(drill)}
    assert expected and expected <= ran, expected - ran


def test_every_bash_block_of_the_guide_is_run_by_a_drill():
    with_bash = {s for s, _, lang, _ in guide_blocks() if lang == "bash"}
    called = set().union(*(sections_called(d) for d in DRILLS))
    assert with_bash - called == set(), f"secciones con comandos que ningún simulacro ejecuta: {with_bash - called}"
    assert called - with_bash == set(), f"secciones sin bloques bash llamadas por un simulacro: {called - with_bash}"
    assert sum(1 for _, _, lang, _ in guide_blocks() if lang == "bash") >= 20


def test_the_first_block_defines_exactly_the_addresses_the_drills_replace():
    [(section, _, _, lines)] = [b for b in guide_blocks() if b[2] == "bash"][:1]
    assert section == "0"
    defined = {m.group(1) for line in lines if (m := re.match(r"\s*(?:export\s+)?([A-Z_]+)=", line))}
    helpers = (DOCS / "drills" / "helpers.sh").read_text()
    replaced = set(re.search(r'DRILL_VARIABLES="([^"]+)"', helpers).group(1).split())
    assert defined == replaced


def test_console_blocks_hold_only_the_servers_installation():
    """What the drills cannot run is installation on a server; no caja, curl or psql command hides there."""
    allowed = re.compile(r"^(sudo |sudoedit |rsync |cp |mkdir |openssl |podman |docker |python3 -m venv )", re.M)
    for section, index, lang, lines in guide_blocks():
        if lang != "console":
            continue
        for line in lines:
            command = line.strip()
            if not command or command.startswith("#"):
                continue
            assert allowed.match(command), f"§{section}#{index}: {command}"
            caja_command = r"(^|\s)caja (db|backup|serve|worker|venue|user|check-config|register|--version)"
            assert not re.search(rf"{caja_command}|(^|\s)(curl|psql|pg_restore) ", command), command
    assert {lang for _, _, lang, _ in guide_blocks()} <= {"bash", "console", "json", "yaml", "text"}


def test_the_guide_lists_every_setting_and_names_files_that_exist():
    from caja_core.settings import VARIABLES

    guide = GUIDE.read_text()
    for key in VARIABLES:
        assert f"`{key}`" in guide or f"{key}`" in guide, key
    made_by_the_operator = ("deploy/container/caja.env", "deploy/container/postgres_password", "deploy/container/tls")
    for path in set(re.findall(r"\bdeploy/[\w./@-]+[\w@]", guide)) - set(made_by_the_operator):
        assert (ROOT / path).exists(), path
    assert (ROOT / "deploy/container/caja.env.example").exists()
    for path in set(re.findall(r"\bdocs/[\w/*-]+\.(?:sh|md)", guide)):
        assert list(ROOT.glob(path)), path
    for path in ("CHANGELOG.md", "Containerfile"):
        assert path in guide and (ROOT / path).exists()

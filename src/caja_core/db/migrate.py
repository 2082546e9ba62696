"""Run Alembic programmatically (the CLI, the demo, the tests and ``/health`` use this)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command

from .engine import normalise_url


def alembic_dir() -> Path:
    env = os.environ.get("CAJA_ALEMBIC_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "alembic" / "env.py").exists() and (parent / "alembic.ini").exists():
            return parent / "alembic"
    raise RuntimeError("No se encontró el directorio de migraciones (alembic/); defina CAJA_ALEMBIC_DIR.")


def alembic_config(url: str) -> Config:
    directory = alembic_dir()
    cfg = Config(str(directory.parent / "alembic.ini"))
    cfg.set_main_option("script_location", str(directory))
    cfg.attributes["url"] = normalise_url(url)
    return cfg


def _in_thread_if_loop(fn: Callable[..., None], *args: Any) -> None:
    """Alembic's env.py runs its own event loop; inside a running loop, run it in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn(*args)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def upgrade(url: str, revision: str = "head") -> None:
    _in_thread_if_loop(command.upgrade, alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    _in_thread_if_loop(command.downgrade, alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(url), revision)


async def downgrade_async(url: str, revision: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(url), revision)


def head_revision() -> str | None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def pending_revisions(current: str | None) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    revs = []
    for rev in script.iterate_revisions(head, current or "base"):
        if rev.revision != current:
            revs.append(rev.revision)
    return list(reversed(revs))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

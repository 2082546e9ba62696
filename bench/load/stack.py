"""The system under load: a scratch PostgreSQL database (migrated, seeded with one venue), the GETNET
terminal simulators (one subprocess hosting one simulator per terminal) and the ``caja serve`` instances
(subprocesses on loopback ports, sharing the database and Redis for web sessions)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from caja_core.catalog import service as catalog
from caja_core.db import Database, migrate
from caja_core.fallback.policy import FallbackPolicy
from caja_core.jornadas import service as jornadas
from caja_core.plugins import make_plugin_manager
from caja_core.providers import ProviderRegistry
from caja_core.registers import service as registers
from caja_core.registers.models import BackupPhone
from caja_core.users import service as users
from caja_core.venues import service as venues

PG_ADMIN = os.environ.get("CAJA_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CAJA_LOAD_REDIS_URL", "redis://127.0.0.1:6379/9")
SUPERVISOR = ("supervisor", "super-carga-2024")
#: The supervisor's code typed on a cashier's screen to authorize a handover, a large cash-out or a close with a
#: difference (their authorization PIN; cashiers' PINs never repeat it).
SUPERVISOR_PIN = "902817"
PRODUCTS = [
    ("Entrada general", 8000),
    ("Cerveza lata", 3500),
    ("Cerveza schop", 4500),
    ("Piscola", 6000),
    ("Mojito", 7000),
    ("Agua mineral", 2000),
    ("Bebida", 2500),
    ("Entrada VIP", 15000),
]

#: How each terminal behaves for the whole run, in the order registers get them (the short form's first 8
#: registers already cover every kind). Set through each simulator's control channel.
PROFILES = [
    "ok",
    "failing",
    "silent_charged",
    "slow",
    "random",
    "silent_not_charged",
    "flaky",
    "ok",
    "ok",
    "random",
    "ok",
    "slow",
    "ok",
    "failing",
    "ok",
    "flaky",
    "ok",
    "silent_charged",
    "ok",
    "random",
    "ok",
    "slow",
    "ok",
    "flaky",
    "ok",
]

PROFILE_FAULTS = {
    "ok": None,
    "failing": {"kind": "no_receipt", "scope": "run"},  # never answers a sale
    "silent_charged": {"kind": "receipt_then_silence", "scope": "run", "charged": True},
    "silent_not_charged": {"kind": "receipt_then_silence", "scope": "run", "charged": False},
    "slow": {"kind": "late_answer", "scope": "run", "delay_s": 4.0},
    "random": {"kind": "random", "scope": "run", "rate": 0.3},
    "flaky": None,  # declines now and then: the cashier's harness queues a "next" decline before some sales
}


def profile_of(n: int) -> str:
    return PROFILES[n % len(PROFILES)]


@dataclass
class Terminal:
    terminal_id: str
    port: int
    control: int
    profile: str = "ok"

    @property
    def device_key(self) -> str:
        return f"getnet:tcp:127.0.0.1:{self.port}"


def cashier_pins(count: int) -> list[str]:
    """Distinct 6-digit PINs that are not easy to guess, one per cashier (the core refuses duplicate and
    trivial PINs, and a cashier's PIN equal to the supervisor's code)."""
    from caja_core.users.secrets import trivial_pin

    pins: list[str] = []
    value = 730411
    while len(pins) < count:
        value += 7919
        pin = f"{value % 1_000_000:06d}"
        if not trivial_pin(pin) and pin not in pins and pin != SUPERVISOR_PIN:
            pins.append(pin)
    return pins


@dataclass
class Register:
    id: int
    code: str
    terminal: Terminal
    #: Who opens the drawer, then who takes it over, in order (a handover with a blind count each).
    cashier_ids: list[int] = field(default_factory=list)


@dataclass
class Venue:
    venue_id: int
    jornada_id: int
    supervisor_id: int
    registers: list[Register]
    cashier_ids: list[int]
    products: list[tuple[int, int]]  # (id, price)
    pins: dict[int, str] = field(default_factory=dict)  # cashier id → PIN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _admin(sql: str) -> None:
    engine = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


class ScratchDatabase:
    """A PostgreSQL database of its own for one run, migrated to head; dropped afterwards unless kept."""

    def __init__(self, keep: bool = False, prefix: str | None = None) -> None:
        prefix = prefix or os.environ.get("CAJA_LOAD_DB_PREFIX", "caja_load")
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.url = PG_ADMIN.rpartition("/")[0] + "/" + self.name
        self.keep = keep
        self.db: Database | None = None

    @property
    def plain_url(self) -> str:
        """The URL as an operator writes it in CAJA_DATABASE_URL."""
        return self.url.replace("postgresql+asyncpg://", "postgresql://")

    async def create(self) -> Database:
        await _admin(f'CREATE DATABASE "{self.name}"')
        await migrate.upgrade_async(self.url)
        self.db = Database(self.url, pool_size=10)
        return self.db

    async def drop(self) -> None:
        if self.db is not None:
            await self.db.dispose()
        if not self.keep:
            await _admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def seed(
    db: Database,
    terminals: list[Terminal],
    cashiers: int,
    registers_count: int,
    *,
    max_wait_s: int = 8,
    sale_timeout_s: float = 30,
) -> Venue:
    """One venue: a supervisor (password, and a PIN to authorize at the registers), ``cashiers`` cashiers (PIN
    login), a catalogue, ``registers_count`` registers spread over the terminals (a counter's registers share
    its terminal; GETNET primary, KLAP manual backup, one backup phone each), an open jornada.

    The first ``registers_count`` cashiers open one register each; the others take a drawer over during the
    night, in turn (cashier ``registers_count + k`` relieves register ``k % registers_count``)."""
    registry = ProviderRegistry.from_plugin_manager(make_plugin_manager())
    async with db.session() as s:
        venue = await venues.create_venue(s, slug="carga", name="Club Carga", close_tolerance=1000)
        admin = await users.create_user(
            s,
            venue_id=venue.id,
            username="admin",
            display_name="Administración",
            role="admin",
            secret="admin-carga-2024",
        )
        sup = await users.create_user(
            s,
            venue_id=venue.id,
            username=SUPERVISOR[0],
            display_name="Supervisora",
            role="supervisor",
            secret=SUPERVISOR[1],
            authorization_pin=SUPERVISOR_PIN,
        )
        cashier_ids = []
        pins: dict[int, str] = {}
        for n, pin in enumerate(cashier_pins(cashiers)):
            user = await users.create_user(
                s,
                venue_id=venue.id,
                username=f"cajero{n + 1:02d}",
                display_name=f"Cajero {n + 1:02d}",
                role="cashier",
                secret=pin,
            )
            cashier_ids.append(user.id)
            pins[user.id] = pin
        cat = await catalog.create_category(s, venue_id=venue.id, name="Barra")
        products = []
        for name, price in PRODUCTS:
            p = await catalog.create_product(s, venue_id=venue.id, category_id=cat.id, name=name, price=price)
            products.append((p.id, price))
        policy = FallbackPolicy(
            max_wait_s=max_wait_s,
            breaker_failures=3,
            breaker_window_s=60,
            breaker_cooldown_s=10,
            backup_phones_required=1,
        )
        regs = []
        for n in range(registers_count):
            terminal = terminals[n * len(terminals) // registers_count]
            getnet = {
                "connection": "tcp",
                "host": "127.0.0.1",
                "port": terminal.port,
                "receipt_timeout_s": 2,
                "sale_timeout_s": sale_timeout_s,
                "short_timeout_s": 3,
                "other_timeout_s": 5,
            }
            reg = await registers.create_register(
                s,
                venue_id=venue.id,
                registry=registry,
                actor_id=admin.id,
                data=registers.RegisterInput(
                    code=f"C{n + 1:02d}",
                    name=f"Caja {n + 1:02d}",
                    register_type="HUMANA",
                    payment_methods=["cash", "card"],
                    primary_provider="getnet",
                    backup_provider="klap",
                    policy=policy,
                    provider_settings={"getnet": getnet, "klap": {"mode": "manual"}},
                ),
            )
            s.add(
                BackupPhone(
                    venue_id=venue.id,
                    name=f"Celular {reg.code}",
                    identifier=f"KLAP-{reg.code}",
                    register_id=reg.id,
                    available=True,
                )
            )
            regs.append(Register(id=reg.id, code=reg.code, terminal=terminal))
        jornada = await jornadas.open_jornada(s, venue_id=venue.id, user_id=sup.id)
    for i, cashier_id in enumerate(cashier_ids):
        regs[i % len(regs)].cashier_ids.append(cashier_id)  # the opener first, then the reliefs in turn
    return Venue(
        venue_id=venue.id,
        jornada_id=jornada.id,
        supervisor_id=sup.id,
        registers=regs,
        cashier_ids=cashier_ids,
        products=products,
        pins=pins,
    )


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class Terminals:
    """The simulators' process (``python -m bench.load.terminals``)."""

    def __init__(self, count: int, step_delay_s: float, seed: int, log_dir: Path) -> None:
        self.count = count
        self.step_delay_s = step_delay_s
        self.seed = seed
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.terminals: list[Terminal] = []

    def start(self) -> list[Terminal]:
        root = Path(__file__).resolve().parents[2]
        with open(self.log_dir / "terminals.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.load.terminals",
                    "--count",
                    str(self.count),
                    "--step-delay",
                    str(self.step_delay_s),
                    "--seed",
                    str(self.seed),
                ],
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line == "ready":
                break
            info = json.loads(line)
            self.terminals.append(Terminal(terminal_id=info["terminal"], port=info["port"], control=info["control"]))
        if len(self.terminals) != self.count:
            raise RuntimeError(f"terminal simulators did not start (see {self.log_dir / 'terminals.log'})")
        return self.terminals

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def control(client: httpx.AsyncClient, terminal: Terminal, method: str, path: str, body=None):
    r = await client.request(method, f"http://127.0.0.1:{terminal.control}{path}", json=body, timeout=10)
    r.raise_for_status()
    return r.json()


async def apply_profiles(terminals: list[Terminal], seed: int) -> None:
    async with httpx.AsyncClient() as client:
        for n, terminal in enumerate(terminals):
            terminal.profile = profile_of(n)
            fault = PROFILE_FAULTS[terminal.profile]
            if fault is not None:
                await control(
                    client,
                    terminal,
                    "POST",
                    "/faults",
                    fault | ({"seed": seed + n} if fault["kind"] == "random" else {}),
                )


class Instance:
    """One ``caja serve`` process. ``kill()`` is SIGKILL: no shutdown handler runs."""

    def __init__(self, name: str, port: int, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = port
        self.env = env
        self.log_path = log_dir / f"serve-{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [_venv_bin("caja"), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    async def wait_ready(self, timeout_s: float = 60) -> float:
        start = time.monotonic()
        async with httpx.AsyncClient() as client:
            while time.monotonic() - start < timeout_s:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"caja serve {self.name} exited with {self.proc.returncode}; see {self.log_path}"
                    )
                try:
                    r = await client.get(f"{self.url}/login", timeout=2)
                    if r.status_code == 200:
                        return time.monotonic() - start
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"caja serve {self.name} not ready after {timeout_s} s; see {self.log_path}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def instance_env(database_url: str, redis_url: str, name: str, data_dir: Path) -> dict[str, str]:
    """Production settings except CAJA_ENV: plain HTTP on loopback, so no Secure cookies (production insists)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env.update(
        {
            "CAJA_ENV": "development",
            "CAJA_DATABASE_URL": database_url,
            "CAJA_REDIS_URL": redis_url,
            "CAJA_SECRET_KEY": SECRET_KEY,
            "CAJA_INSTANCE_ID": f"carga-{name}",
            "CAJA_LOG_LEVEL": "WARNING",
            "CAJA_LOG_FORMAT": "text",
            "CAJA_DATA_DIR": str(data_dir),
            "CAJA_BACKUP_DIR": str(data_dir / "backups"),
            "CAJA_BACKUP_INTERVAL_HOURS": "0",
            "CAJA_METRICS_TOKEN": METRICS_TOKEN,
        }
    )
    return env


SECRET_KEY = secrets.token_urlsafe(36)
METRICS_TOKEN = secrets.token_urlsafe(16)


def run_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="caja-load-"))

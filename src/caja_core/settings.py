"""Settings from ``CAJA_*`` environment variables, validated at start-up.

Every missing or invalid value is reported on its own line with what is expected; the caller prints them
and exits with code 2 before anything starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Mapping
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from .clock import DEFAULT_TIMEZONE

Env = Literal["demo", "development", "production"]

WEAK_SECRETS = {
    "",
    "secret",
    "changeme",
    "change-me",
    "caja",
    "demo",
    "password",
    "dev",
    "development",
    "insecure",
    "default",
}
DEMO_SECRET_KEY = "demo-only-secret-key-not-for-production"


class Settings(msgspec.Struct, kw_only=True):
    env: Env = "development"
    database_url: str = "sqlite:///var/caja.db"
    secret_key: str = ""
    redis_url: str | None = None
    metrics_token: str | None = None
    metrics_token_previous: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    timezone: str = DEFAULT_TIMEZONE
    data_dir: str = "var"
    backup_dir: str = "var/backups"
    backup_keep_daily: int = 7
    backup_keep_weekly: int = 4
    backup_interval_hours: int = 24
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    secure_cookies: bool = False
    instance_id: str = msgspec.field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    load_plugins: str | None = None
    trace_plugins: bool = False
    public_url: str | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


#: Every variable, its meaning and default, for docs and error messages.
VARIABLES: dict[str, str] = {
    "CAJA_ENV": "demo | development | production (por defecto development)",
    "CAJA_DATABASE_URL": "URL de la base: sqlite:///ruta.db o postgresql://usuario@host:5432/base",
    "CAJA_SECRET_KEY": "clave secreta de al menos 32 caracteres (obligatoria salvo en demo)",
    "CAJA_REDIS_URL": "redis://host:6379/0 para sesiones compartidas entre instancias (opcional)",
    "CAJA_METRICS_TOKEN": "token para /metrics y /metrics/prometheus (opcional; sin él solo admins)",
    "CAJA_METRICS_TOKEN_PREVIOUS": "token anterior, aceptado también mientras se rota CAJA_METRICS_TOKEN (opcional)",
    "CAJA_HOST": "dirección donde escuchar (por defecto 127.0.0.1)",
    "CAJA_PORT": "puerto HTTP, 1–65535 (por defecto 8000)",
    "CAJA_TIMEZONE": "zona horaria IANA del local (por defecto America/Santiago)",
    "CAJA_DATA_DIR": "carpeta de datos (por defecto var)",
    "CAJA_BACKUP_DIR": "carpeta de respaldos (por defecto var/backups)",
    "CAJA_BACKUP_KEEP_DAILY": "respaldos diarios a conservar (por defecto 7)",
    "CAJA_BACKUP_KEEP_WEEKLY": "respaldos semanales a conservar (por defecto 4)",
    "CAJA_BACKUP_INTERVAL_HOURS": "horas entre respaldos automáticos; 0 los desactiva (por defecto 24)",
    "CAJA_LOG_LEVEL": "DEBUG | INFO | WARNING | ERROR (por defecto INFO)",
    "CAJA_LOG_FORMAT": "json | text (por defecto json)",
    "CAJA_SECURE_COOKIES": "1 detrás de HTTPS: cookies con Secure (por defecto 0)",
    "CAJA_INSTANCE_ID": "nombre de esta instancia (por defecto host-pid)",
    "CAJA_LOAD_PLUGINS": "plugins a cargar, separados por coma (vacío = solo los incluidos)",
    "CAJA_TRACE_PLUGINS": "1 registra cada llamada a hooks",
    "CAJA_PUBLIC_URL": "dirección con que los clientes abren su boleta digital (QR), p. ej. https://caja.mi-local.cl",
}


class SettingsError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_CHOICES = {"env": ("demo", "development", "production"), "log_format": ("json", "text")}
_BOOL_TRUE = {"1", "true", "yes", "si", "sí", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []
    raw: dict[str, object] = {}
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    for name in fields:
        key = f"CAJA_{name.upper()}"
        if key not in env:
            continue
        value = env[key].strip()
        if name in ("port", "backup_keep_daily", "backup_keep_weekly", "backup_interval_hours"):
            if not value.isdigit():
                problems.append(f"{key}={value!r} no es válido: se espera {VARIABLES[key]}")
                continue
            raw[name] = int(value)
        elif name in _CHOICES:
            if value not in _CHOICES[name]:
                problems.append(f"{key}={value!r} no es válido: se espera {VARIABLES[key]}")
                continue
            raw[name] = value
        elif name in ("secure_cookies", "trace_plugins"):
            if value.lower() not in _BOOL_TRUE | _BOOL_FALSE:
                problems.append(f"{key}={value!r} no es válido: se espera 1 o 0")
                continue
            raw[name] = value.lower() in _BOOL_TRUE
        else:
            raw[name] = value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if problems:
        # Report the type errors and whatever else can be checked on the values that did parse.
        with contextlib.suppress(msgspec.ValidationError):
            problems.extend(_check(msgspec.convert(raw, Settings, strict=False)))
        raise SettingsError(problems)
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        path = str(exc).rpartition("$.")[2].rstrip("`") or "?"
        key = f"CAJA_{path.upper()}"
        problems.append(f"{key} no es válido: se espera {VARIABLES.get(key, 'otro valor')} ({exc})")
        raise SettingsError(problems) from None
    problems.extend(_check(settings))
    if problems:
        raise SettingsError(problems)
    return settings


def _check(s: Settings) -> list[str]:
    problems: list[str] = []
    if not 1 <= s.port <= 65535:
        problems.append(f"CAJA_PORT={s.port} no es válido: se espera {VARIABLES['CAJA_PORT']}")
    if not (s.database_url.startswith("sqlite") or s.database_url.startswith("postgres")):
        problems.append(f"CAJA_DATABASE_URL no es válido: se espera {VARIABLES['CAJA_DATABASE_URL']}")
    elif s.database_url.startswith("postgres") and not s.database_url.rpartition("/")[2].split("?")[0]:
        problems.append("CAJA_DATABASE_URL no indica la base: se espera postgresql://usuario@host:5432/base")
    if s.redis_url is not None and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        problems.append(f"CAJA_REDIS_URL no es válido: se espera {VARIABLES['CAJA_REDIS_URL']}")
    if not 1 <= s.backup_keep_daily <= 366:
        problems.append(f"CAJA_BACKUP_KEEP_DAILY={s.backup_keep_daily} no es válido: se espera un número de 1 a 366")
    if not 0 <= s.backup_keep_weekly <= 520:
        problems.append(f"CAJA_BACKUP_KEEP_WEEKLY={s.backup_keep_weekly} no es válido: se espera un número de 0 a 520")
    if s.backup_interval_hours > 24 * 7:
        problems.append(f"CAJA_BACKUP_INTERVAL_HOURS={s.backup_interval_hours} no es válido: se espera de 0 a 168")
    if s.env == "demo":
        if not s.secret_key:
            s.secret_key = DEMO_SECRET_KEY
    elif not s.secret_key:
        problems.append(f"CAJA_SECRET_KEY falta: se espera {VARIABLES['CAJA_SECRET_KEY']}")
    elif s.env == "production" and (
        len(s.secret_key) < 32
        or s.secret_key.lower() in WEAK_SECRETS
        or s.secret_key == DEMO_SECRET_KEY
        or len(set(s.secret_key)) < 8
    ):
        problems.append(
            "CAJA_SECRET_KEY es débil: en producción se exigen al menos 32 caracteres aleatorios "
            "(p. ej. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    if (
        s.env == "production"
        and s.metrics_token is not None
        and (len(s.metrics_token) < 16 or s.metrics_token.lower() in WEAK_SECRETS)
    ):
        problems.append("CAJA_METRICS_TOKEN es débil: en producción se esperan al menos 16 caracteres aleatorios")
    if s.env == "production" and s.metrics_token_previous is not None and len(s.metrics_token_previous) < 16:
        problems.append("CAJA_METRICS_TOKEN_PREVIOUS es débil: en producción se esperan al menos 16 caracteres")
    if s.metrics_token_previous is not None and s.metrics_token is None:
        problems.append("CAJA_METRICS_TOKEN_PREVIOUS sin CAJA_METRICS_TOKEN: defina primero el token nuevo")
    if s.metrics_token is not None and s.metrics_token == s.secret_key:
        problems.append("CAJA_METRICS_TOKEN no puede ser igual a CAJA_SECRET_KEY")
    if s.env == "production" and not s.secure_cookies:
        problems.append("CAJA_SECURE_COOKIES debe ser 1 en producción (la app se sirve detrás de HTTPS)")
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        problems.append(f"CAJA_TIMEZONE={s.timezone!r} no es válido: se espera {VARIABLES['CAJA_TIMEZONE']}")
    if s.public_url is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", s.public_url):
        problems.append(f"CAJA_PUBLIC_URL={s.public_url!r} no es válido: se espera {VARIABLES['CAJA_PUBLIC_URL']}")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"CAJA_LOG_LEVEL={s.log_level!r} no es válido: se espera {VARIABLES['CAJA_LOG_LEVEL']}")
    return problems


def settings_or_exit(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """``load_settings`` for commands that start something: on any problem, print one line per problem
    to stderr and exit with code 2 before anything starts."""
    import sys

    try:
        return load_settings(environ, **overrides)
    except SettingsError as exc:
        print("caja: la configuración tiene problemas; no se inició nada:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from None

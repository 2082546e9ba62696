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
    database_pool_size: int = 10
    database_application_name: str | None = None
    install_operators: str | None = None
    tls_cert_file: str | None = None
    drain_seconds: int = 10

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
    "CAJA_DATABASE_POOL_SIZE": "conexiones a PostgreSQL por proceso, 1–100 (otras tantas de desborde; por defecto 10)",
    "CAJA_DATABASE_APPLICATION_NAME": "nombre de las conexiones en pg_stat_activity (por defecto caja app <instancia>)",
    "CAJA_INSTALL_OPERATORS": "administradores con acceso a toda la instalación: local/usuario separados por coma",
    "CAJA_TLS_CERT_FILE": "certificado TLS que sirve el proxy (PEM), para vigilar su vencimiento (opcional)",
    "CAJA_DRAIN_SECONDS": "segundos máximos de drenaje al detenerse (SIGTERM), 1–120 (por defecto 10)",
}

#: Other CAJA_* variables read by a command or the test suite (not settings of a running process).
OTHER_VARIABLES = {
    "CAJA_ALEMBIC_DIR": "carpeta de migraciones (por defecto, las del paquete caja-core)",
    "CAJA_AGENT_TOKEN": "token de la caja para `caja agent`",
    "CAJA_NEW_USER_SECRET": "contraseña o PIN para `caja user create`",
    "CAJA_TEST_DATABASE_URL": "PostgreSQL de la suite de pruebas",
    "CAJA_SCREENSHOTS": "carpeta donde las pruebas de navegador guardan capturas",
}


class SettingsError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_CHOICES = {"env": ("demo", "development", "production"), "log_format": ("json", "text")}
_INTEGERS = (
    "port",
    "backup_keep_daily",
    "backup_keep_weekly",
    "backup_interval_hours",
    "database_pool_size",
    "drain_seconds",
)
_OPTIONAL = (
    "public_url",
    "redis_url",
    "metrics_token",
    "metrics_token_previous",
    "load_plugins",
    "database_application_name",
    "install_operators",
    "tls_cert_file",
)
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
        if name in _OPTIONAL and not value:
            continue  # ``CAJA_REDIS_URL=`` in an env file means "not set"
        if name in _INTEGERS:
            if not (value.isascii() and value.isdigit() and len(value) <= 9):
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
        partial = dict(raw.items())
        with contextlib.suppress(msgspec.ValidationError):
            problems.extend(_check(msgspec.convert(partial, Settings, strict=False)))
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
    if s.metrics_token and s.metrics_token == s.secret_key:
        problems.append("CAJA_METRICS_TOKEN no puede ser igual a CAJA_SECRET_KEY")
    if s.env == "production" and not s.secure_cookies:
        problems.append("CAJA_SECURE_COOKIES debe ser 1 en producción (la app se sirve detrás de HTTPS)")
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        problems.append(f"CAJA_TIMEZONE={s.timezone!r} no es válido: se espera {VARIABLES['CAJA_TIMEZONE']}")
    if s.public_url is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", s.public_url):
        problems.append(f"CAJA_PUBLIC_URL={s.public_url!r} no es válido: se espera {VARIABLES['CAJA_PUBLIC_URL']}")
    if not 1 <= s.database_pool_size <= 100:
        problems.append(
            f"CAJA_DATABASE_POOL_SIZE={s.database_pool_size} no es válido: se espera {VARIABLES['CAJA_DATABASE_POOL_SIZE']}"
        )
    if not 1 <= s.drain_seconds <= 120:
        problems.append(
            f"CAJA_DRAIN_SECONDS={s.drain_seconds} no es válido: se espera {VARIABLES['CAJA_DRAIN_SECONDS']}"
        )
    if s.database_url.startswith("postgres"):
        problems.extend(_check_database_tls(s.database_url))
    from .ops.access import invalid_operators

    for item in invalid_operators(s.install_operators):
        problems.append(f"CAJA_INSTALL_OPERATORS: {item!r} no es válido: se espera local/usuario (p. ej. luna/admin)")
    if s.tls_cert_file is not None:
        from .ops.health import certificate_not_after

        try:
            certificate_not_after(s.tls_cert_file)
        except (OSError, ValueError, IndexError) as exc:
            problems.append(
                f"CAJA_TLS_CERT_FILE={s.tls_cert_file!r} no se puede leer como certificado PEM ({type(exc).__name__})"
            )
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"CAJA_LOG_LEVEL={s.log_level!r} no es válido: se espera {VARIABLES['CAJA_LOG_LEVEL']}")
    return problems


def _check_database_tls(url: str) -> list[str]:
    """The libpq parameters of a PostgreSQL URL: a known ``sslmode`` and certificate files that exist."""
    from pathlib import Path

    from .db.engine import SSLMODES, split_libpq_params

    try:
        _, params = split_libpq_params(url)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse
        return ["CAJA_DATABASE_URL no es válido: se espera postgresql://usuario@host:5432/base"]
    problems = []
    mode = params.get("sslmode")
    if mode is not None and mode not in SSLMODES:
        problems.append(f"CAJA_DATABASE_URL: sslmode={mode!r} no es válido: se espera {', '.join(SSLMODES)}")
    for key in ("sslrootcert", "sslcert", "sslkey"):
        if key in params and not Path(params[key]).is_file():
            problems.append(f"CAJA_DATABASE_URL: {key}={params[key]!r} no existe o no es un archivo")
    if mode in ("verify-ca", "verify-full") and "sslrootcert" not in params:
        problems.append(
            f"CAJA_DATABASE_URL: sslmode={mode} necesita sslrootcert=<certificado raíz del servidor PostgreSQL>"
        )
    return problems


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One Spanish warning per ``CAJA_*`` variable that caja does not know, with the closest known name."""
    import difflib

    env = os.environ if environ is None else environ
    known = set(VARIABLES) | set(OTHER_VARIABLES)
    warnings = []
    for key in sorted(env):
        if not key.startswith("CAJA_") or key in known:
            continue
        # Compared without the common prefix, which would make every name look alike.
        close = difflib.get_close_matches(key[5:], sorted(k[5:] for k in known), n=1, cutoff=0.7)
        hint = f"; ¿quiso decir CAJA_{close[0]}?" if close else ""
        warnings.append(f"{key} no es una variable de caja y se ignora{hint}")
    return warnings


def settings_or_exit(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """``load_settings`` for commands that start something: on any problem, print one line per problem
    to stderr and exit with code 2 before anything starts."""
    import sys

    for warning in unknown_variables(environ):
        print(f"caja: aviso: {warning}", file=sys.stderr)
    try:
        return load_settings(environ, **overrides)
    except SettingsError as exc:
        print("caja: la configuración tiene problemas; no se inició nada:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        raise SystemExit(2) from None

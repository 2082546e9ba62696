"""Start-up validation: every problem found at once, one line each, saying what is expected."""

import pytest

from caja_core.settings import DEMO_SECRET_KEY, SettingsError, load_settings

GOOD = "Zq8vN3rT6yB1mK4pW7sD0fH2jL5xC9gA"


def problems(env):
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    return err.value.problems


def test_all_problems_are_reported_together():
    found = problems(
        {
            "CAJA_ENV": "prod",
            "CAJA_PORT": "x",
            "CAJA_LOG_FORMAT": "xml",
            "CAJA_SECURE_COOKIES": "tal vez",
            "CAJA_REDIS_URL": "localhost:6379",
            "CAJA_TIMEZONE": "Marte/Base",
        }
    )
    assert len(found) == 7, found
    assert (
        found[0] == "CAJA_ENV='prod' no es válido: se espera demo | development | production (por defecto development)"
    )
    assert any(p.startswith("CAJA_PORT='x' no es válido: se espera puerto HTTP") for p in found)
    assert any(p.startswith("CAJA_LOG_FORMAT='xml' no es válido: se espera json | text") for p in found)
    assert any(p == "CAJA_SECURE_COOKIES='tal vez' no es válido: se espera 1 o 0" for p in found)
    assert any(p.startswith("CAJA_REDIS_URL no es válido") for p in found)
    assert any(p.startswith("CAJA_TIMEZONE='Marte/Base'") for p in found)
    assert any(p.startswith("CAJA_SECRET_KEY falta") for p in found)


def test_secret_key_rules():
    assert load_settings({"CAJA_ENV": "demo"}).secret_key == DEMO_SECRET_KEY
    assert problems({"CAJA_ENV": "development"}) == [
        "CAJA_SECRET_KEY falta: se espera clave secreta de al menos 32 caracteres (obligatoria salvo en demo)"
    ]
    assert load_settings({"CAJA_ENV": "development", "CAJA_SECRET_KEY": "dev"}).secret_key == "dev"
    for weak in ("changeme", "x" * 64, DEMO_SECRET_KEY, GOOD[:20]):
        found = problems({"CAJA_ENV": "production", "CAJA_SECRET_KEY": weak, "CAJA_SECURE_COOKIES": "1"})
        assert len(found) == 1 and found[0].startswith("CAJA_SECRET_KEY es débil"), weak
    assert (
        load_settings({"CAJA_ENV": "production", "CAJA_SECRET_KEY": GOOD, "CAJA_SECURE_COOKIES": "1"}).env
        == "production"
    )


def test_tokens_database_and_backups():
    base = {"CAJA_SECRET_KEY": GOOD}
    assert problems({**base, "CAJA_METRICS_TOKEN": GOOD}) == ["CAJA_METRICS_TOKEN no puede ser igual a CAJA_SECRET_KEY"]
    assert problems({**base, "CAJA_METRICS_TOKEN_PREVIOUS": "old-token-0123456789"}) == [
        "CAJA_METRICS_TOKEN_PREVIOUS sin CAJA_METRICS_TOKEN: defina primero el token nuevo"
    ]
    assert problems({**base, "CAJA_DATABASE_URL": "postgresql://caja@db:5432/"}) == [
        "CAJA_DATABASE_URL no indica la base: se espera postgresql://usuario@host:5432/base"
    ]
    found = problems({**base, "CAJA_BACKUP_KEEP_DAILY": "0", "CAJA_BACKUP_INTERVAL_HOURS": "1000"})
    assert [p.split("=")[0] for p in found] == ["CAJA_BACKUP_KEEP_DAILY", "CAJA_BACKUP_INTERVAL_HOURS"]
    ok = load_settings(
        {
            **base,
            "CAJA_METRICS_TOKEN": "new-token-0123456789",
            "CAJA_METRICS_TOKEN_PREVIOUS": "old-token-0123456789",
            "CAJA_REDIS_URL": "rediss://:pw@redis:6380/0",
            "CAJA_BACKUP_INTERVAL_HOURS": "0",
        }
    )
    assert ok.metrics_token_previous == "old-token-0123456789" and ok.backup_interval_hours == 0


def test_unknown_caja_names_are_warned_with_the_closest_known_one():
    from caja_core.settings import unknown_variables

    warnings = unknown_variables(
        {
            "CAJA_BACKUP_INTERVAL_HOUR": "1",
            "CAJA_SECRT_KEY": "x",
            "CAJA_WHATEVER": "1",
            "CAJA_SECRET_KEY": "x",
            "CAJA_TEST_DATABASE_URL": "postgresql://x/y",
            "HOME": "/root",
        }
    )
    assert warnings == [
        "CAJA_BACKUP_INTERVAL_HOUR no es una variable de caja y se ignora; ¿quiso decir CAJA_BACKUP_INTERVAL_HOURS?",
        "CAJA_SECRT_KEY no es una variable de caja y se ignora; ¿quiso decir CAJA_SECRET_KEY?",
        "CAJA_WHATEVER no es una variable de caja y se ignora",
    ]


def test_empty_values_in_an_env_file_mean_not_set():
    # The example env file ships `CAJA_METRICS_TOKEN=` empty: not a token equal to an empty secret.
    assert problems({"CAJA_SECRET_KEY": "", "CAJA_METRICS_TOKEN": "", "CAJA_REDIS_URL": ""}) == [
        "CAJA_SECRET_KEY falta: se espera clave secreta de al menos 32 caracteres (obligatoria salvo en demo)"
    ]
    ok = load_settings({"CAJA_SECRET_KEY": GOOD, "CAJA_METRICS_TOKEN": "", "CAJA_REDIS_URL": ""})
    assert ok.metrics_token is None and ok.redis_url is None


def test_database_pool_tls_operators_and_drain_settings(tmp_path):
    base = {"CAJA_SECRET_KEY": GOOD}
    ok = load_settings(
        {
            **base,
            "CAJA_DATABASE_POOL_SIZE": "25",
            "CAJA_DATABASE_APPLICATION_NAME": "caja sala",
            "CAJA_INSTALL_OPERATORS": "luna/admin, sol/jefe",
            "CAJA_DRAIN_SECONDS": "20",
        }
    )
    assert (ok.database_pool_size, ok.database_application_name, ok.drain_seconds) == (25, "caja sala", 20)
    found = problems(
        {
            **base,
            "CAJA_DATABASE_POOL_SIZE": "0",
            "CAJA_DRAIN_SECONDS": "500",
            "CAJA_INSTALL_OPERATORS": "admin",
            "CAJA_DATABASE_URL": "postgresql://caja@db/caja?sslmode=siempre",
            "CAJA_TLS_CERT_FILE": str(tmp_path / "none.pem"),
        }
    )
    assert [p.split(":")[0].split("=")[0] for p in found] == [
        "CAJA_DATABASE_POOL_SIZE",
        "CAJA_DRAIN_SECONDS",
        "CAJA_DATABASE_URL",
        "CAJA_INSTALL_OPERATORS",
        "CAJA_TLS_CERT_FILE",
    ], found

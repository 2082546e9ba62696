"""The files in deploy/ are valid and name things that exist: alert rules → metrics of the registry,
systemd units → caja commands, the env example → a configuration ``caja check-config`` accepts."""

import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import yaml

from caja_core import commands  # noqa: F401  (registers the core commands)
from caja_core.cli import _load_plugin_commands, cli
from caja_core.ops import metrics
from caja_core.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CAJA = str(Path(sys.executable).parent / "caja")


def load_rules():
    data = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_alert_rules_parse_and_name_metrics_that_exist():
    rules = load_rules()
    known = metrics.metric_names() | {"up"}
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        names = set(re.findall(r"\b(caja_[a-z0-9_]+|up)\b(?=\s*[{\[)>=<!]|\s*$)", rule["expr"]))
        assert names, rule["alert"]
        assert names <= known, (rule["alert"], names - known)


def test_alert_rules_cover_what_the_owner_asked_for():
    by_name = {rule["alert"]: rule for rule in load_rules()}
    assert "> 0.01" in by_name["CajaHighErrorRate"]["expr"] and by_name["CajaHighErrorRate"]["for"] == "5m"
    assert "histogram_quantile(0.95" in by_name["CajaHighLatencyP95"]["expr"]
    assert by_name["CajaHighLatencyP95"]["expr"].strip().endswith("> 2")
    assert "> 0" in by_name["CajaPaymentsInDoubt"]["expr"] and by_name["CajaPaymentsInDoubt"]["for"] == "5m"
    assert "caja_breaker_state" in by_name["CajaBreakerOpen"]["expr"]
    assert "26 * 3600" in by_name["CajaBackupTooOld"]["expr"]
    assert "caja_backup_last_run_failed" in by_name["CajaBackupFailed"]["expr"]
    assert "caja_agent_last_seen_age_seconds" in by_name["CajaAgentHeartbeatMissing"]["expr"]


def exec_lines(unit: Path) -> list[list[str]]:
    found = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStart", "ExecStartPre", "ExecReload"):
            found.append(shlex.split(value))
    return found


def test_systemd_units_run_caja_commands_that_exist(tmp_path):
    _load_plugin_commands()  # serve comes from the web package
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"caja@.service", "caja-worker.service"}
    for unit in units:
        for argv in exec_lines(unit):
            assert argv[0] == "/opt/caja/.venv/bin/caja", argv
            ctx = click.Context(cli)
            command = cli
            for word in argv[1:]:
                if word.startswith("-"):
                    break
                command = command.get_command(ctx, word) if isinstance(command, click.Group) else command
                assert command is not None, (unit.name, argv)
            options = {o for p in command.params for o in getattr(p, "opts", [])}
            for word in argv[1:]:
                if word.startswith("--"):
                    assert word in options, (unit.name, word)
        # systemd's own checker (binary path replaced by this checkout's).
        text = (
            unit.read_text()
            .replace("/opt/caja/.venv/bin/caja", CAJA)
            .replace("EnvironmentFile=/etc/caja/caja.env", "EnvironmentFile=-/etc/caja/caja.env")
        )
        name = unit.name.replace("@.", "@8001.")
        (tmp_path / name).write_text(text)
        checker = shutil.which("systemd-analyze")
        assert checker, "systemd-analyze is needed to check the units"
        result = subprocess.run([checker, "verify", str(tmp_path / name)], capture_output=True, text=True, check=False)
        assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_env_example_is_a_valid_production_configuration_once_secrets_are_filled():
    env = {}
    for line in (DEPLOY / "systemd" / "caja.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    assert env["CAJA_SECRET_KEY"] == "" and env["CAJA_METRICS_TOKEN"] == ""  # never a usable default
    env = {k: v for k, v in env.items() if v}
    env["CAJA_SECRET_KEY"] = secrets.token_urlsafe(48)
    env["CAJA_METRICS_TOKEN"] = secrets.token_urlsafe(32)
    settings = load_settings(env)
    assert settings.env == "production" and settings.secure_cookies and settings.redis_url


def test_nginx_config_balances_the_two_instances_of_the_units():
    conf = (DEPLOY / "nginx" / "caja.conf").read_text()
    assert conf.count("{") == conf.count("}")
    assert re.findall(r"server 127\.0\.0\.1:(\d+)", conf) == ["8001", "8002"]
    assert "ssl_certificate " in conf and "return 301 https://" in conf
    assert "X-Forwarded-Proto" in conf and "non_idempotent" not in conf

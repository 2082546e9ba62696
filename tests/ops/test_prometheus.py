"""Prometheus, for real: the alert rules pass promtool's checks and their unit tests (the alerts fire on a
dead worker, a failed or old backup, no backups at all, a damaged backup, an expiring certificate…), and a
real Prometheus scrapes a real `caja serve` with the metrics token, loads the rules and evaluates them."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .netkit import TOKEN, Serve, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} es necesario (paquete Debian prometheus: scripts/test-prerequisites.sh lo instala)"
    return path


def test_alert_rules_pass_promtool_and_their_unit_tests():
    check = subprocess.run(
        [tool("promtool"), "check", "rules", str(DEPLOY / "prometheus-alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [tool("promtool"), "test", "rules", "prometheus-alerts.test.yml"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
        check=False,
    )
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def test_every_alert_has_a_unit_test_that_makes_it_fire():
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((DEPLOY / "prometheus-alerts.test.yml").read_text())
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - fired == set(), f"alertas sin una prueba que las dispare: {sorted(alerts - fired)}"
    assert {"CajaProcessSilent", "CajaWorkerDown", "CajaBackupFailed", "CajaBackupsNotRunning"} <= fired
    assert {"CajaBackupTooOld", "CajaTLSCertificateExpiresSoon"} <= fired


@pytest.mark.slow
def test_a_real_prometheus_scrapes_caja_with_the_token_and_evaluates_the_rules(sqlite_url, tmp_path):
    serve = Serve(tmp_path, "srv1-8001", CAJA_DATABASE_URL=sqlite_url, CAJA_BACKUP_DIR=str(tmp_path / "backups"))
    prometheus = None
    try:
        serve.wait("/health/ready")
        exposition = httpx.get(
            serve.url + "/metrics/prometheus", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert exposition.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        lint = subprocess.run(
            [tool("promtool"), "check", "metrics"], input=exposition.text, capture_output=True, text=True, check=False
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr

        (tmp_path / "token").write_text(TOKEN)
        shutil.copy(DEPLOY / "prometheus-alerts.yml", tmp_path / "caja-alerts.yml")
        port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(tmp_path / "caja-alerts.yml")],
                    "scrape_configs": [
                        {
                            "job_name": "caja",
                            "metrics_path": "/metrics/prometheus",
                            "authorization": {"credentials_file": str(tmp_path / "token")},
                            "static_configs": [{"targets": [f"127.0.0.1:{serve.port}"]}],
                        }
                    ],
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("w")
        prometheus = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        api = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 90
        target = None
        while time.monotonic() < deadline:
            try:
                targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
            except (httpx.HTTPError, ValueError, KeyError):
                targets = []
            if targets and targets[0]["health"] == "up":
                target = targets[0]
                break
            time.sleep(0.5)
        assert target is not None, (tmp_path / "prometheus.log").read_text()[-3000:]
        assert target["lastError"] == ""
        query = httpx.get(f"{api}/query", params={"query": "caja_build_info"}, timeout=5).json()
        [series] = query["data"]["result"]
        assert series["metric"]["version"] and series["value"][1] == "1"
        while time.monotonic() < deadline:
            groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            if rules and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules):
                break
            time.sleep(0.5)
        assert rules and all(rule["health"] == "ok" for rule in rules), [
            (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"
        ]
        text = (tmp_path / "prometheus.log").read_text()
        assert "content type" not in text.lower() and "content-type" not in text.lower(), text[-2000:]
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        serve.stop()

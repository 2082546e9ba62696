"""``caja serve`` and ``caja demo`` as an operator runs them (real subprocesses, real sockets)."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from livesite import free_port

CAJA = [sys.executable, "-c", "from caja_core.cli import main; main()"]


def run(*args, env=None, timeout=60):
    return subprocess.run(
        [*CAJA, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )


def test_serve_refuses_bad_settings_one_line_each():
    r = run("serve", env={"CAJA_ENV": "production", "CAJA_PORT": "abc", "CAJA_SECRET_KEY": ""})
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0] == "caja: la configuración tiene problemas; no se inició nada:", r.stderr
    problems = [ln for ln in lines[1:] if ln.startswith("  - ")]
    assert len(problems) == len(lines) - 1, r.stderr  # one line per problem, nothing else
    assert any("CAJA_PORT" in ln for ln in problems) and any("CAJA_SECRET_KEY" in ln for ln in problems)
    assert "Traceback" not in r.stderr


def test_demo_seeds_once_and_prints_the_logins(tmp_path):
    db = tmp_path / "demo.db"
    first = run("demo", "--db", str(db), "--no-serve")
    assert first.returncode == 0, first.stderr
    assert "creada" in first.stdout and "camila" in first.stdout and "PIN 461937" in first.stdout
    again = run("demo", "--db", str(db), "--no-serve")
    assert "reutilizada" in again.stdout


def test_demo_listens_where_caja_port_says(tmp_path):
    port = free_port()
    r = run("demo", "--db", str(tmp_path / "demo.db"), "--no-serve", env={"CAJA_PORT": str(port)})
    assert r.returncode == 0, r.stderr
    assert f"Abra http://127.0.0.1:{port}/login" in r.stdout
    r = run("demo", "--db", str(tmp_path / "demo.db"), "--no-serve", "--port", "8123", env={"CAJA_PORT": str(port)})
    assert "Abra http://127.0.0.1:8123/login" in r.stdout  # the option wins over the variable


def test_serve_answers_http(tmp_path, sqlite_url):
    port = free_port()
    env = {**os.environ, "CAJA_ENV": "demo", "CAJA_DATABASE_URL": sqlite_url, "CAJA_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [*CAJA, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as resp:
                    body = resp.read().decode()
                    cookies = resp.headers.get_all("set-cookie") or []
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(
                        proc.stderr.read().decode() if proc.poll() is not None else "sin respuesta"
                    ) from None
                time.sleep(0.2)
        assert "Ingresar" in body and "/static/vendor/htmx.min.js" in body
        assert any(c.startswith("caja_csrf=") and "HttpOnly" in c for c in cookies)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_htmx_is_vendored_with_its_license():
    static = Path(__file__).resolve().parents[1] / "src" / "caja_web" / "static" / "vendor"
    assert (static / "htmx.min.js").stat().st_size > 40_000
    assert "Zero-Clause BSD" in (static / "htmx.LICENSE").read_text()


def test_production_refuses_to_start_with_the_demo_logins(tmp_path):
    """Found: production mode accepted the demo users with their published passwords and PINs."""
    db = tmp_path / "demo.db"
    assert run("demo", "--db", str(db), "--no-serve").returncode == 0
    env = {
        "CAJA_ENV": "production",
        "CAJA_DATABASE_URL": f"sqlite:///{db}",
        "CAJA_SECRET_KEY": "Vt7-qL2xN9pR4sK8mW3zB6yH1cF5gJ0dE",
        "CAJA_SECURE_COOKIES": "1",
        "CAJA_PORT": str(free_port()),
    }
    r = run("serve", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("caja: en producción no se aceptan usuarios"), line
    for user in ("admin (demo)", "supervisor (demo)", "camila (demo)", "diego (demo)"):
        assert user in line

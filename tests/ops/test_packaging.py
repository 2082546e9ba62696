"""An install that works from a package: the four wheels, built from this tree, go into an empty venv that
has no checkout nearby; `caja db upgrade` finds the migrations inside caja-core and `caja serve` serves. And
the container files name what exists (no container engine runs in CI here: they are not built)."""

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

from caja_core.db import migrate

from .netkit import SECRET, free_port

ROOT = Path(__file__).resolve().parents[2]


def uv() -> str:
    """The uv that made the environment: ``$UV`` (set by ``make test``), ``.tools/bin/uv`` or on PATH."""
    local = ROOT / ".tools" / "bin" / "uv"
    found = os.environ.get("UV") or (str(local) if local.exists() else shutil.which("uv"))
    assert found, "uv es necesario: make test lo instala en .tools/ y lo indica en $UV"
    return found


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600, **kwargs)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.mark.slow
def test_the_wheels_install_into_an_empty_venv_and_run_without_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    run(uv(), "build", "--all-packages", "--wheel", "-o", str(dist), "--directory", str(ROOT))
    wheels = sorted(dist.glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == ["caja_core", "caja_getnet", "caja_klap", "caja_web"]
    core = zipfile.ZipFile(next(w for w in wheels if w.name.startswith("caja_core-")))
    shipped = {Path(n).name for n in core.namelist() if n.startswith("caja_core/migrations/versions/")}
    assert shipped == {p.name for p in (ROOT / "alembic" / "versions").glob("*.py")}
    assert "caja_core/migrations/env.py" in core.namelist()
    assert not [n for n in core.namelist() if "__pycache__" in n or n.startswith("tests/")]

    # An empty venv with the locked versions of the runtime dependencies only (no dev group, none of the
    # four packages from the tree), then the four wheels with pip.
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    run(uv(), "venv", "--python", sys.executable, str(venv))
    run(
        uv(), "sync", "--locked", "--no-dev", "--all-packages", "--no-install-workspace", "--inexact",
        "--directory", str(ROOT), env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)},
    )  # fmt: skip
    run(uv(), "pip", "install", "--python", python, "--no-deps", *map(str, wheels))
    installed = run(uv(), "pip", "list", "--python", python).stdout
    for dev_tool in ("pytest", "playwright", "ruff", "mypy", "schemathesis", "hypothesis"):
        assert re.search(rf"^{dev_tool}\s", installed, re.M) is None, dev_tool

    caja = str(venv / "bin" / "caja")
    away = tmp_path / "elsewhere"  # no alembic/ nor alembic.ini anywhere up from here
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAJA_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(
        {
            "CAJA_SECRET_KEY": SECRET,
            "CAJA_DATABASE_URL": f"sqlite:///{away}/caja.db",
            "CAJA_BACKUP_DIR": str(away / "backups"),
            "CAJA_BACKUP_INTERVAL_HOURS": "0",
        }
    )
    version = run(caja, "--version", env=env, cwd=away).stdout
    assert re.search(r"caja, version \d+\.\d+\.\d+", version), version
    upgraded = run(caja, "db", "upgrade", env=env, cwd=away).stdout
    assert f"→ {migrate.head_revision()}" in upgraded, upgraded
    run(caja, "db", "status", "--check", env=env, cwd=away)
    where = run(python, "-c", "import caja_core.db.migrate as m; print(m.alembic_dir())", env=env, cwd=away)
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the migrations inside the package

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [caja, "serve", "--port", str(port)], env=env, cwd=away, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.3)
        assert httpx.get(f"http://127.0.0.1:{port}/login", timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/static/css/caja.css", timeout=10).status_code == 200
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
        assert health["status"] in ("ok", "degraded")
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
        log.close()


def test_make_install_is_a_production_install_without_the_dev_tools():
    make = (ROOT / "Makefile").read_text()
    install = re.search(r"^install: .*\n\t(.+)$", make, re.M).group(1)
    assert "--no-dev" in install and "--all-packages" in install and "--no-editable" in install
    assert re.search(r"^test: dev\b", make, re.M) and re.search(r"^demo: dev$", make, re.M)


def test_the_container_files_name_what_exists():
    containerfile = (ROOT / "Containerfile").read_text()
    assert "uv build --all-packages --wheel" in containerfile and "--no-dev" in containerfile
    assert 'ENTRYPOINT ["caja"]' in containerfile and 'CMD ["serve"]' in containerfile
    assert "postgresql-client-15" in containerfile  # pg_dump for the backups, the server's major version
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"app1", "app2", "worker", "postgres", "redis", "nginx"}
    assert [services[s]["command"] for s in ("app1", "app2", "worker")] == [["serve"], ["serve"], ["worker"]]
    assert services["app1"]["build"] == {"context": "..", "dockerfile": "Containerfile"}
    assert services["app1"]["environment"]["CAJA_INSTANCE_ID"] != services["app2"]["environment"]["CAJA_INSTANCE_ID"]
    base = ROOT / "deploy"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (base / source).exists() or source.endswith("/tls"), source
    assert (base / compose["services"]["app1"]["env_file"].replace("caja.env", "caja.env.example")).exists()
    # The compose nginx is the shipped one with only the instances, certificate and log path changed.
    shipped = (base / "nginx" / "caja.conf").read_text()
    expected = (
        shipped.replace("server 127.0.0.1:8001 ", "server app1:8000 ")
        .replace("server 127.0.0.1:8002 ", "server app2:8000 ")
        .replace("/etc/letsencrypt/live/caja.example.cl/", "/etc/nginx/tls/")
        .replace("/var/log/nginx/caja.access.log", "/dev/stdout")
    )
    compose_nginx = (base / "container" / "nginx.conf").read_text()
    assert compose_nginx.split("\n", 2)[2] == expected.split("\n", 2)[2]


@pytest.mark.slow
def test_a_plugin_installed_beside_caja_survives_make_dev(tmp_path):
    """plugins/README.md's way to add a plugin: `uv pip install -e ../caja-NAME` into caja's venv; `make demo` and
    `make test` (both run `make dev`) keep it installed and loaded."""
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    make = ["make", "--no-print-directory", "-C", str(ROOT), "dev", f"UV={uv()}"]
    run(uv(), "venv", "--python", sys.executable, str(venv))
    run(*make, env=env)
    caja = str(venv / "bin" / "caja")
    run(caja, "plugin", "new", "mipago", "--dir", str(tmp_path), env=env)
    run(
        uv(),
        "pip",
        "install",
        "--python",
        str(venv / "bin" / "python"),
        "--no-deps",
        "-e",
        str(tmp_path / "caja-mipago"),
    )
    run(*make, env=env)
    listed = run(caja, "plugins", env=env).stdout
    assert "mipago — cargado" in listed and "proveedor mipago «Mipago»" in listed, listed

"""PostgreSQL over TLS, for real: a throw-away PostgreSQL cluster that accepts only TLS connections, with a
certificate from a test authority. The libpq parameters in CAJA_DATABASE_URL (sslmode, sslrootcert) work for
the app, for the migrations and for pg_dump/pg_restore (a backup and its verification), and a wrong root
certificate is refused in one line."""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from caja_core.db.engine import Database

from .netkit import SECRET, free_port

CAJA = str(Path(sys.executable).parent / "caja")
PG_BIN = Path("/usr/lib/postgresql/15/bin")

pytestmark = pytest.mark.slow


def sh(*argv: str, user: str | None = None, **kwargs) -> subprocess.CompletedProcess:
    if user:
        argv = ("runuser", "-u", user, "--", *argv)
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, **kwargs)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
       "-keyout", str(key), "-out", str(cert))  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def tls_cluster():
    """A PostgreSQL 15 cluster on a free port: TLS only (hostnossl is rejected), certificate for 127.0.0.1."""
    assert (PG_BIN / "initdb").exists(), "PostgreSQL 15 server binaries are needed (Debian postgresql-15)"
    base = Path(tempfile.mkdtemp(prefix="caja-pgtls-"))  # outside pytest's root-only folder: postgres runs it
    data = base / "data"
    tls = base / "tls"
    tls.mkdir()
    ca_key, ca_cert = make_ca(tls, "caja-test-ca")
    _, other_ca = make_ca(tls, "another-ca")
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
       "-keyout", str(tls / "server.key"), "-out", str(tls / "server.csr"))  # fmt: skip
    (tls / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    sh("openssl", "x509", "-req", "-in", str(tls / "server.csr"), "-CA", str(ca_cert), "-CAkey", str(ca_key),
       "-CAcreateserial", "-days", "2", "-extfile", str(tls / "san.cnf"), "-out", str(tls / "server.crt"))  # fmt: skip
    shutil.chown(base, "postgres")
    for path in tls.iterdir():
        shutil.chown(path, "postgres")
    shutil.chown(tls, "postgres")
    os.chmod(tls / "server.key", 0o600)
    sh(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", user="postgres")
    port = free_port()
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
            f"ssl = on\nssl_cert_file = '{tls / 'server.crt'}'\nssl_key_file = '{tls / 'server.key'}'\n"
            "fsync = off\n"
        )
    (data / "pg_hba.conf").write_text(
        "local all all trust\nhostnossl all all 127.0.0.1/32 reject\nhostssl all all 127.0.0.1/32 trust\n"
    )
    sh(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "start", user="postgres")
    try:
        yield {"port": port, "ca": ca_cert, "other_ca": other_ca, "base": base}
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


def caja(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CAJA_", "PG"))}
    base.update(env)
    return subprocess.run([CAJA, *args], capture_output=True, text=True, env=base, timeout=180, check=False)


def test_tls_parameters_work_for_the_app_migrations_and_backups(tls_cluster, tmp_path):
    port, ca = tls_cluster["port"], tls_cluster["ca"]
    plain = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    # The server refuses connections without TLS: whatever works below went over TLS.
    refused = subprocess.run(
        ["psql", f"{plain}?sslmode=disable", "-tAc", "SELECT 1"], capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0 and "no encryption" in refused.stderr

    url = f"{plain}?sslmode=verify-full&sslrootcert={ca}"
    env = {"CAJA_SECRET_KEY": SECRET, "CAJA_DATABASE_URL": url, "CAJA_BACKUP_DIR": str(tmp_path / "backups")}
    checked = caja(env, "check-config")
    assert checked.returncode == 0, checked.stderr
    upgraded = caja(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert caja(env, "venue", "create", "--slug", "luna", "--name", "Club Luna").returncode == 0
    backup = caja(env, "backup", "create")  # pg_dump, then pg_restore into a scratch database: both over TLS
    assert backup.returncode == 0 and "correcta" in backup.stdout, backup.stdout + backup.stderr

    async def session_info():
        db = Database(url, application_name="caja app srv1-8001")
        try:
            async with db.session() as s:
                row = (
                    await s.execute(
                        text(
                            "SELECT a.application_name, s.ssl FROM pg_stat_activity a "
                            "JOIN pg_stat_ssl s USING (pid) WHERE a.pid = pg_backend_pid()"
                        )
                    )
                ).one()
                return tuple(row)
        finally:
            await db.dispose()

    assert asyncio.run(session_info()) == ("caja app srv1-8001", True)


def test_a_wrong_root_certificate_is_refused_in_one_line(tls_cluster):
    port, other_ca = tls_cluster["port"], tls_cluster["other_ca"]
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={other_ca}"
    status = caja({"CAJA_SECRET_KEY": SECRET, "CAJA_DATABASE_URL": url}, "db", "status")
    assert status.returncode == 2 and "Traceback" not in status.stderr
    assert "No se pudo conectar a la base de datos" in status.stderr
    bad = caja(
        {"CAJA_SECRET_KEY": SECRET, "CAJA_DATABASE_URL": "postgresql://caja@db/caja?sslmode=verify-full"},
        "check-config",
    )
    assert bad.returncode == 2 and "sslmode=verify-full necesita sslrootcert" in bad.stderr
    missing = caja(
        {
            "CAJA_SECRET_KEY": SECRET,
            "CAJA_DATABASE_URL": "postgresql://caja@db/caja?sslmode=require&sslrootcert=/no/existe.crt",
        },
        "check-config",
    )
    assert missing.returncode == 2 and "sslrootcert='/no/existe.crt' no existe" in missing.stderr

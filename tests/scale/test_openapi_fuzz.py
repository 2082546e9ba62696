"""schemathesis against a running ``caja serve``, driven by the OpenAPI schema the app itself publishes at
``/schema/openapi.json``. That schema documents exactly the JSON endpoints (agent API, provider webhooks,
health, metrics) and none of the HTML pages. Generated requests never get a 5xx, and every answer has a
documented status code, content type and body."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from bench.load.stack import free_port
from caja_core.db import Database
from caja_core.registers import service as registers
from caja_core.registers.models import CashRegister

pytestmark = pytest.mark.slow

METRICS_TOKEN = "token-de-metricas-para-pruebas-0123456789"
JSON_OPERATIONS = {
    "GET /health",
    "GET /health/live",
    "GET /health/ready",
    "GET /metrics",
    "GET /metrics/prometheus",
    "POST /webhooks/{provider_id}",
    "GET /api/agent/v1/commands/next",
    "POST /api/agent/v1/commands/{command_id}/claim",
    "POST /api/agent/v1/commands/{command_id}/progress",
    "POST /api/agent/v1/commands/{command_id}/result",
    "POST /api/agent/v1/heartbeat",
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 50


async def _agent_token(db_path: Path) -> str:
    """A valid agent token for one of the demo registers (as the admin's "rotate token" button makes)."""
    db = Database(f"sqlite:///{db_path}")
    try:
        async with db.session() as s:
            register = (await s.scalars(select(CashRegister).order_by(CashRegister.id).limit(1))).one()
            return await registers.rotate_agent_token(
                s, venue_id=register.venue_id, register_id=register.id, actor_id=None
            )
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[str, str]:
    """``caja serve`` on the demo venue (GETNET and KLAP registers), on a loopback port, and an agent token."""
    folder = tmp_path_factory.mktemp("openapi")
    caja = str(Path(sys.executable).parent / "caja")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env.update(
        {
            "CAJA_ENV": "demo",
            "CAJA_DATABASE_URL": f"sqlite:///{folder / 'demo.db'}",
            "CAJA_DATA_DIR": str(folder),
            "CAJA_BACKUP_DIR": str(folder / "backups"),
            "CAJA_BACKUP_INTERVAL_HOURS": "0",
            "CAJA_METRICS_TOKEN": METRICS_TOKEN,
            "CAJA_LOG_LEVEL": "WARNING",
        }
    )
    subprocess.run(
        [caja, "demo", "--no-serve", "--db", str(folder / "demo.db")],
        env=env,
        check=True,
        capture_output=True,
        cwd=folder,
    )
    agent_token = asyncio.run(_agent_token(folder / "demo.db"))
    port = free_port()
    with open(folder / "serve.log", "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [caja, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=folder, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (folder / "serve.log").read_text()
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        raise AssertionError("caja serve did not start: " + (folder / "serve.log").read_text())
    yield url, agent_token
    proc.terminate()
    proc.wait(15)


def fuzz(schema, base_url: str, headers_for, examples: int) -> list[str]:
    """Every operation of ``schema`` with ``examples`` generated requests each; returns the failures."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            fuzz_operation(operation, base_url, headers_for(operation.path), examples)
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {str(exc)[:600]}")
    return failures


def fuzz_operation(operation, base_url: str, headers: dict[str, str], examples: int) -> None:
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy())
    def run(case) -> None:
        if operation.path.endswith("/commands/next"):
            case.query = {**(case.query or {}), "wait": 0}  # a long poll (25 s by default): answer at once
        case.call_and_validate(base_url=base_url, checks=CHECKS, headers=headers)

    run()


def test_published_schema_documents_the_json_api_and_no_html_page(served):
    base_url, _ = served
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json")
    assert schema.specification.version.startswith("3."), "the app publishes an OpenAPI 3 document"
    labels = {r.ok().label for r in schema.get_all_operations()}
    assert labels == JSON_OPERATIONS, sorted(labels ^ JSON_OPERATIONS)
    raw = httpx.get(f"{base_url}/schema/openapi.json").json()
    assert not any(
        p.startswith(("/login", "/caja", "/admin", "/jornada", "/static")) or p == "/" for p in raw["paths"]
    ), sorted(raw["paths"])
    health = raw["paths"]["/health"]["get"]["responses"]
    assert set(health) == {"200", "503"}
    webhook = raw["paths"]["/webhooks/{provider_id}"]["post"]
    assert {"200", "202", "400", "401", "404", "409", "413"} <= set(webhook["responses"])
    assert "application/json" in webhook["requestBody"]["content"]
    assert raw["paths"]["/metrics"]["get"]["security"] == [{"metricsToken": []}]


def test_json_endpoints_never_5xx_and_answer_as_documented(served):
    """Each operation with the credentials it documents: the register's token for the agent API, the metrics
    token for metrics (health with it shows the full report); webhooks carry only what schemathesis makes."""
    base_url, agent_token = served
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json")

    def headers_for(path: str) -> dict[str, str] | None:
        if path.startswith("/api/agent/"):
            return {"Authorization": f"Bearer {agent_token}"}
        if path.startswith(("/metrics", "/health")):
            return {"Authorization": f"Bearer {METRICS_TOKEN}"}
        return None

    failures = fuzz(schema, base_url, headers_for, EXAMPLES)
    assert not failures, "\n".join(failures)


def test_unauthenticated_calls_get_their_documented_401(served):
    base_url, _ = served
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json")
    protected = schema.include(path_regex="^/(metrics|api/agent/)")
    failures = fuzz(protected, base_url, lambda path: {"Authorization": "Bearer otro-token"}, 10)
    assert not failures, "\n".join(failures)
    assert httpx.get(f"{base_url}/metrics").status_code == 401
    assert httpx.get(f"{base_url}/metrics", headers={"Authorization": "Bearer otro"}).status_code == 401
    assert httpx.get(f"{base_url}/metrics/prometheus", headers={"Authorization": "Bearer otro"}).text == ""
    assert httpx.get(f"{base_url}/api/agent/v1/commands/next").status_code == 401

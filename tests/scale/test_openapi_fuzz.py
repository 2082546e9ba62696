"""schemathesis against a running ``caja serve``: the OpenAPI schema the app publishes at
``/schema/openapi.json``, and the JSON endpoints (health, metrics, webhooks) described here as their READMEs
and handlers document them (the app leaves them out of its published schema). Generated requests never get a
5xx, and every answer matches what is documented for it."""

from __future__ import annotations

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
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from bench.load.stack import free_port

pytestmark = pytest.mark.slow

METRICS_TOKEN = "token-de-metricas-para-pruebas-0123456789"
REJECTED = {"type": "object", "required": ["status", "reason"],
            "properties": {"status": {"enum": ["rejected"]}, "reason": {"type": "string", "minLength": 1}}}
ACCEPTED = {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["ok"]}}}
JSON_OBJECT = {"type": "object"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


#: The JSON endpoints as documented (plugins/getnet/README.md, docs/klap.md, the ops handlers).
JSON_API = {
    "openapi": "3.0.3",
    "info": {"title": "caja JSON endpoints", "version": "0.1.0"},
    "paths": {
        "/health": {"get": {"responses": {
            "200": {"description": "ok or degraded", **_json({
                "type": "object", "required": ["status", "services"],
                "properties": {"status": {"enum": ["ok", "degraded"]}, "services": JSON_OBJECT}})},
            "503": {"description": "error", **_json({
                "type": "object", "required": ["status"], "properties": {"status": {"enum": ["error"]}}})}}}},
        "/health/live": {"get": {"responses": {"200": {"description": "the process answers", **_json({
            "type": "object", "required": ["status"], "properties": {"status": {"enum": ["ok"]}}})}}}},
        "/metrics": {"get": {"security": [{"bearer": []}], "responses": {
            "200": {"description": "metrics", **_json(JSON_OBJECT)},
            "401": {"description": "no or wrong token"}}}},
        "/metrics/prometheus": {"get": {"security": [{"bearer": []}], "responses": {
            "200": {"description": "text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": {"description": "no or wrong token"}}}},
        "/webhooks/{provider_id}": {"post": {
            "parameters": [{"name": "provider_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": JSON_OBJECT}}},
            "responses": {
                "200": {"description": "accepted (applied, known decline or repeat)", **_json(ACCEPTED)},
                "202": {"description": "accepted, applied as soon as the database answers", **_json(ACCEPTED)},
                "400": {"description": "unreadable notice", **_json(REJECTED)},
                "401": {"description": "not authenticated", **_json(REJECTED)},
                "404": {"description": "unknown provider, order or reference", **_json(REJECTED)},
                "409": {"description": "rejected notice (amount, reference or state)", **_json(REJECTED)}}}},
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> str:
    """``caja serve`` on the demo venue (GETNET and KLAP registers), on a loopback port."""
    folder = tmp_path_factory.mktemp("openapi")
    caja = str(Path(sys.executable).parent / "caja")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAJA_")}
    env.update({"CAJA_ENV": "demo", "CAJA_DATABASE_URL": f"sqlite:///{folder / 'demo.db'}",
                "CAJA_DATA_DIR": str(folder), "CAJA_BACKUP_DIR": str(folder / "backups"),
                "CAJA_BACKUP_INTERVAL_HOURS": "0", "CAJA_METRICS_TOKEN": METRICS_TOKEN, "CAJA_LOG_LEVEL": "WARNING"})
    subprocess.run([caja, "demo", "--no-serve", "--db", str(folder / "demo.db")], env=env, check=True,
                   capture_output=True, cwd=folder)
    port = free_port()
    log = open(folder / "serve.log", "wb")
    proc = subprocess.Popen([caja, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=folder,
                            stdout=log, stderr=log)
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
    yield url
    proc.terminate()
    proc.wait(15)


def fuzz(schema, base_url: str, checks: list, examples: int, headers: dict | None = None) -> list[str]:
    """Every operation of ``schema`` with ``examples`` generated requests each; returns the failures."""
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
        @hypothesis.given(case=operation.as_strategy())
        def run(case) -> None:
            case.call_and_validate(base_url=base_url, checks=checks, headers=headers)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {str(exc)[:600]}")
    return failures


def test_published_schema_never_gets_a_server_error(served):
    schema = schemathesis.openapi.from_url(f"{served}/schema/openapi.json")
    assert schema.specification.version.startswith("3."), "the app publishes an OpenAPI 3 document"
    labels = [r.ok().label for r in schema.get_all_operations()]
    assert "POST /login" in labels and "POST /jornada/cerrar" in labels, labels
    failures = fuzz(schema, served, [not_a_server_error, response_schema_conformance], examples=25)
    assert not failures, "\n".join(failures)


def test_json_endpoints_answer_as_documented_and_never_5xx(served):
    schema = schemathesis.openapi.from_dict(JSON_API)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures = fuzz(schema, served, checks, examples=60, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert not failures, "\n".join(failures)
    # And without the token, the metrics are refused (not leaked).
    assert httpx.get(f"{served}/metrics").status_code == 401
    assert httpx.get(f"{served}/metrics", headers={"Authorization": "Bearer otro"}).status_code == 401

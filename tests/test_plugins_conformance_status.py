"""`caja plugins` says, for each provider plugin, whether its conformance tests exist and (with --check) pass."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

from caja_core.plugin_kit import conformance_of, find_conformance_tests

PLUGIN = """
from caja_core import hookimpl
from caja_core.testing.fake import ScriptableProvider

provider = ScriptableProvider("mipago", "Mi Pago")


@hookimpl
def register_providers(add_provider):
    add_provider(provider)
"""

KIT_TEST = """
import msgspec
import pytest

import caja_mipago.plugin
from caja_core.providers import OutcomeKind
from caja_core.testing.conformance import ProviderConformance
from caja_core.testing.fake import FakeSettings, ScriptableProvider, Step

STEPS = {
    "approved": Step(),
    "declined": Step(kind=OutcomeKind.DECLINED, code="05"),
    "unavailable": Step(kind=OutcomeKind.UNAVAILABLE),
    "silent": Step(hang=True),
}


class Provider(ScriptableProvider):
    async def charge(self, request, settings, ctx, progress):
        outcome = await super().charge(request, settings, ctx, progress)
        if BROKEN and outcome.kind is OutcomeKind.UNKNOWN:  # a time-out reported as a decline
            return msgspec.structs.replace(outcome, kind=OutcomeKind.DECLINED)
        return outcome


class TestMiPago(ProviderConformance):
    plugin = caja_mipago.plugin
    silent_timeout_s = 0.5

    @pytest.fixture
    def provider(self):
        caja_mipago.plugin.provider = Provider("mipago", "Mi Pago")
        return caja_mipago.plugin.provider

    @pytest.fixture
    def upstream(self, provider):
        return provider

    @pytest.fixture
    def settings(self):
        return FakeSettings(timeout_s=0.3)

    async def script_upstream(self, upstream, reply):
        upstream.script("charge", STEPS[reply])
        if reply == "unavailable":
            upstream.set_default("status", Step(kind=OutcomeKind.UNKNOWN))
            upstream.set_default("cancel", Step(kind=OutcomeKind.UNAVAILABLE))

    def webhook_for(self, settings, request, outcome):
        body = msgspec.json.encode(
            {"order_id": f"o{request.ticket}", "reference_id": str(request.attempt_id), "amount": outcome.amount,
             "status": outcome.kind.value}
        )
        return {"x-fake-secret": settings.webhook_secret}, body
"""


def make_plugin(root: Path, *, tests: str | None, broken: bool = False):
    """A plugin project as a checkout or an editable install has it: pyproject.toml, src/, tests/."""
    package = root / "src" / "caja_mipago"
    package.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [project]
            name = "caja-mipago"
            version = "0.1.0"

            [tool.pytest.ini_options]
            pythonpath = ["src"]
            """
        ),
        encoding="utf-8",
    )
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "plugin.py").write_text(PLUGIN, encoding="utf-8")
    if tests is not None:
        (root / "tests").mkdir()
        (root / "tests" / "test_conformance.py").write_text(f"BROKEN = {broken}\n{tests}", encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"plugin_{root.name}", package / "plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_plugin_without_conformance_tests_says_so(tmp_path):
    plugin = make_plugin(tmp_path / "sin", tests=None)
    assert find_conformance_tests(plugin) == (tmp_path / "sin", [])
    info = conformance_of(plugin, run=True)
    assert info.status == "sin pruebas" and "ProviderConformance" in info.detail and info.command == ""
    # Another test module that does not use the kit is not a conformance test.
    other = make_plugin(tmp_path / "otra", tests="def test_nothing():\n    pass\n")
    assert conformance_of(other).status == "sin pruebas"


def test_found_tests_are_unverified_until_run_and_the_command_runs_them(tmp_path):
    plugin = make_plugin(tmp_path / "buena", tests=KIT_TEST)
    test_file = tmp_path / "buena" / "tests" / "test_conformance.py"
    info = conformance_of(plugin, python=sys.executable)
    assert info.status == "sin verificar" and info.tests == [str(test_file)]
    assert info.command == f"{sys.executable} -m pytest -q {test_file}"
    checked = conformance_of(plugin, run=True, timeout_s=240)
    assert checked.status == "verificado", checked.detail
    assert "passed" in checked.detail and "failed" not in checked.detail


def test_a_provider_that_breaks_the_contract_fails_its_check(tmp_path):
    plugin = make_plugin(tmp_path / "rota", tests=KIT_TEST, broken=True)
    checked = conformance_of(plugin, run=True, timeout_s=240)
    assert checked.status == "falla"
    assert "failed" in checked.detail and "test_silence_maps_to_unknown_never_declined" in checked.detail

"""Every hook spec is documented in plugins/README.md under a heading that is its signature, and every hook is
exercised by a test through the core code that calls it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import click
from click.testing import CliRunner

from caja_core import hookimpl, hookspecs
from caja_core.fallback import FallbackRule, collect_rules
from caja_core.plugins import call_event, make_plugin_manager, template_dirs
from caja_core.printing.drivers import BrowserPrinter, PrinterRegistry
from caja_core.providers import Outcome, OutcomeKind, ProviderDefault, ProviderRegistry, RegisterDefaults
from caja_core.testing.fake import ScriptableProvider

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "plugins" / "README.md"
TEST_DIRS = [ROOT / "tests", ROOT / "web" / "tests", *sorted((ROOT / "plugins").glob("*/tests"))]


def hook_specs() -> dict[str, object]:
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
    }


def signature_heading(name: str, fn) -> str:
    sig = inspect.signature(fn)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"### `{name}({params}) -> {sig.return_annotation}`"


def test_there_are_hooks_to_document():
    assert {"register_providers", "on_payment_event"} <= set(hook_specs())


def test_every_hook_is_documented_under_its_signature():
    headings = {line.strip() for line in README.read_text().splitlines() if line.startswith("### ")}
    missing = [signature_heading(n, fn) for n, fn in hook_specs().items() if signature_heading(n, fn) not in headings]
    assert not missing, "plugins/README.md no documenta estos hooks:\n" + "\n".join(missing)


def test_every_hook_is_implemented_by_some_test():
    """A hook no test implements is a hook nobody knows works: each must have a ``@hookimpl`` in a test."""
    sources = "\n".join(p.read_text() for d in TEST_DIRS if d.exists() for p in d.rglob("*.py"))
    implemented = set(re.findall(r"@hookimpl(?:\([^)]*\))?\s*\n\s*(?:async\s+)?def\s+(\w+)\(", sources))
    missing = sorted(set(hook_specs()) - implemented)
    assert not missing, f"hooks sin una implementación ejercitada en las pruebas: {missing}"


# Each hook, through the core code that calls it -----------------------------------------------------------
class Everything:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.events: list = []
        self.selected: list = []

    @hookimpl
    def register_providers(self, add_provider):
        add_provider(ScriptableProvider("otro"))

    @hookimpl
    def provider_defaults(self, register_type, demo_url):
        if register_type == "VIRTUAL":
            return None
        return [ProviderDefault(provider_id="otro", role="primary", settings={"device": demo_url or "caja-1"})]

    @hookimpl
    def register_printers(self, add_printer):
        printer = BrowserPrinter()
        printer.id = "otra_impresora"
        add_printer(printer)

    @hookimpl
    def register_fallback_rules(self, add_rule):
        add_rule(FallbackRule("decline", "Regla del plugin"))

    @hookimpl
    def select_provider(self, intent, candidates, policy):
        self.selected.append(list(candidates))
        return

    @hookimpl
    def on_payment_event(self, event):
        self.events.append(event)

    @hookimpl
    def template_dirs(self):
        return [str(self.tmp)]

    @hookimpl
    def register_commands(self, cli):
        @cli.command("saludo")
        def saludo():
            """Saluda."""
            click.echo("hola desde el plugin")


def test_each_hook_reaches_its_core_caller(tmp_path):
    plugin = Everything(tmp_path)
    pm = make_plugin_manager(plugin, load_entrypoints=False)
    registry = ProviderRegistry.from_plugin_manager(pm)
    assert "otro" in registry.ids()
    assert registry.defaults_for("HUMANA") == RegisterDefaults(
        primary_provider="otro", provider_settings={"otro": {"device": "caja-1"}}
    )
    assert registry.defaults_for("TOTEM", demo_url="http://demo").provider_settings == {
        "otro": {"device": "http://demo"}
    }
    assert registry.defaults_for("VIRTUAL") == RegisterDefaults()
    assert "otra_impresora" in [p.id for p in PrinterRegistry.from_plugin_manager(pm).all()]
    assert "Regla del plugin" in [r.description for r in collect_rules(pm)]
    assert pm.hook.select_provider(intent=None, candidates=["otro"], policy=None) == "otro"
    assert plugin.selected == [["otro"]]
    call_event(pm, Outcome(kind=OutcomeKind.APPROVED))
    assert len(plugin.events) == 1
    assert template_dirs(pm) == [str(tmp_path)]

    @click.group()
    def group():
        pass

    pm.hook.register_commands(cli=group)
    result = CliRunner().invoke(group, ["saludo"])
    assert result.exit_code == 0 and "hola desde el plugin" in result.output


def test_a_failing_event_listener_is_logged_and_counted_and_the_others_still_run(caplog):
    from caja_core.ops import metrics

    seen: list[str] = []

    class First:
        @hookimpl
        def on_payment_event(self, event):
            seen.append("first")

    class Broken:
        @hookimpl
        def on_payment_event(self, event):
            raise RuntimeError("listener roto")

    class Last:
        @hookimpl
        def on_payment_event(self, event):
            seen.append("last")

    pm = make_plugin_manager(First(), load_entrypoints=False)
    pm.register(Broken(), name="roto")
    pm.register(Last())
    failures = metrics.PLUGIN_LISTENER_FAILURES.labels(plugin="roto")
    before = failures._value.get()
    call_event(pm, Outcome(kind=OutcomeKind.DECLINED))  # logged and counted, not raised
    assert sorted(seen) == ["first", "last"]
    assert failures._value.get() == before + 1
    assert any("roto" in r.getMessage() and r.exc_info for r in caplog.records)

"""The dependency arrows of ARCHITECTURE.md: caja_core never imports the web framework or a plugin."""

import subprocess
import sys


def test_core_never_imports_litestar_or_plugins():
    code = (
        "import pkgutil, importlib, sys, caja_core\n"
        "for m in pkgutil.walk_packages(caja_core.__path__, 'caja_core.'):\n"
        "    if '.testing' in m.name: continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('litestar', 'caja_web', 'caja_getnet', 'caja_klap'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_core_service_imports_first():
    """Whatever service module a program imports first (a worker, a script, a test runner's subprocess), it
    imports: no import cycle that only works in one order. Each in a fresh interpreter, a few at a time."""
    import pkgutil

    import caja_core

    names = [
        m.name
        for m in pkgutil.walk_packages(caja_core.__path__, "caja_core.")
        if m.name.endswith(".service") or m.name == "caja_core.cli"
    ]
    assert len(names) > 10
    failed: list[str] = []
    for start in range(0, len(names), 8):
        batch = names[start : start + 8]
        runs = [
            (name, subprocess.Popen([sys.executable, "-c", f"import {name}"], stderr=subprocess.PIPE, text=True))
            for name in batch
        ]
        for name, run in runs:
            _, err = run.communicate(timeout=120)
            if run.returncode != 0:
                failed.append(f"{name}: {err.strip().splitlines()[-1] if err.strip() else run.returncode}")
    assert failed == [], "\n".join(failed)


def _provider_words() -> tuple[set[str], set[str]]:
    """The ids of the installed provider plugins and their providers, and the names of their settings fields
    that are theirs alone (with an underscore: one-word names such as ``host`` are everyone's; minus the fields of
    the core's own types and the words of the secret-field rule)."""
    import msgspec

    from caja_core import providers
    from caja_core.plugins import ALWAYS_LOADED, make_plugin_manager
    from caja_core.providers import ProviderRegistry
    from tests.shipped import only_shipped, shipped_entry_points

    # The shipped plugins only: an author's own plugin installed beside caja (its name is the docs' example,
    # "mipago") is not what caja_core and the web app must never name.
    registry = ProviderRegistry.from_plugin_manager(make_plugin_manager(environ=only_shipped()))
    ids = {p.id for p in registry.all()} | (shipped_entry_points() - set(ALWAYS_LOADED))
    core_fields = {
        name
        for value in vars(providers).values()
        if isinstance(value, type) and issubclass(value, msgspec.Struct)
        for name in value.__struct_fields__
    }
    fields = {
        name
        for p in registry.all()
        for name in p.Settings.__struct_fields__
        if "_" in name and name not in core_fields and name not in providers.SECRET_FIELD_WORDS
    }
    return ids, fields


def test_core_and_web_name_no_provider():
    """caja_core and the web app reach providers only through the plugin API: no file of theirs (code, comment,
    docstring or template) names a provider plugin or one of its settings fields. The core's test providers
    (caja_core/testing) have settings of their own and are left out of the field check."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    ids, fields = _provider_words()
    assert {"getnet", "klap"} <= ids and "receipt_timeout_s" in fields  # the check sees the shipped plugins
    id_re = re.compile("|".join(sorted(ids)), re.IGNORECASE)
    field_re = re.compile(r"\b(" + "|".join(sorted(fields)) + r")\b")
    found = []
    for top in (root / "src" / "caja_core", root / "web" / "src" / "caja_web"):
        for path in sorted(top.rglob("*")):
            if not path.is_file() or path.suffix in (".png", ".ico", ".woff2", ".pyc"):
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            where = path.relative_to(root)
            for number, line in enumerate(text.splitlines(), 1):
                names_a_field = "testing" not in path.parts and field_re.search(line)
                if id_re.search(line) or names_a_field:
                    found.append(f"{where}:{number}: {line.strip()[:100]}")
    assert found == [], "provider knowledge in the core or the web app:\n" + "\n".join(found)

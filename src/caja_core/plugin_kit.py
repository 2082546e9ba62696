"""What a plugin author works with from the command line: ``caja plugins`` (what is installed, what loaded, the
hooks each plugin implements, its providers with their capabilities and settings) and ``caja plugin new NAME``
(a package generated from ``plugin_template/``: a provider skeleton, a fake device and a conformance test that
runs green)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Literal

import msgspec
import pluggy

from .errors import PluginError, ValidationFailed
from .plugins import ALWAYS_LOADED, installed_entry_points, make_plugin_manager
from .providers import CASH, ProviderRegistry, SettingSpec, describe_settings

TEMPLATE = Path(__file__).with_name("plugin_template")
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,30}$")


class ProviderInfo(msgspec.Struct, kw_only=True):
    id: str
    name: str
    capabilities: list[str]
    min_amount: int
    settings: list[SettingSpec]


class ConformanceInfo(msgspec.Struct, kw_only=True):
    """Whether a provider plugin's conformance tests (the kit, ``ProviderConformance``) exist and passed.

    ``status``: "sin pruebas" (no test of the plugin subclasses the kit where it is installed), "sin verificar"
    (found, not run: ``command`` runs them), "verificado" (run now: all passed), "falla" (run now: ``detail``
    says what failed or why they could not run)."""

    status: Literal["sin pruebas", "sin verificar", "verificado", "falla"]
    tests: list[str] = []
    command: str = ""
    detail: str = ""


class PluginInfo(msgspec.Struct, kw_only=True):
    name: str  # entry-point name, or the module of a built-in plugin
    source: str  # "module:attr" of the entry point, or "incorporado"
    distribution: str  # "caja-mipago 0.1.0"; "" for built-in plugins
    loaded: bool
    hooks: list[str]
    providers: list[ProviderInfo] = []
    error: str = ""
    conformance: ConformanceInfo | None = None  # provider plugins only


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else ""


def _hooks_of(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])


#: The kit's class name: a test module of the plugin that names it is a conformance test.
_KIT = "ProviderConformance"
#: How long ``caja plugins --check`` lets one plugin's conformance tests run.
CHECK_TIMEOUT_S = 300.0


def _module_file(plugin: object) -> Path | None:
    module = plugin if hasattr(plugin, "__file__") else sys.modules.get(type(plugin).__module__)
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def find_conformance_tests(plugin: object) -> tuple[Path | None, list[Path]]:
    """The plugin's project folder (the nearest folder above its module with a ``pyproject.toml``, as in a
    checkout or an editable install) and its test modules that subclass the kit. A plugin installed from a
    wheel ships no tests: (None, [])."""
    file = _module_file(plugin)
    if file is None:
        return None, []
    for folder in list(file.parents)[:4]:
        if folder.name in ("site-packages", "dist-packages"):
            break
        if (folder / "pyproject.toml").is_file():
            tests = folder / "tests"
            candidates = sorted(tests.rglob("test_*.py")) if tests.is_dir() else []
            return folder, [path for path in candidates if _KIT in path.read_text(encoding="utf-8", errors="replace")]
    return None, []


_SUMMARY = re.compile(r"^=*\s*(?P<summary>(\d+ \w+(, )?)+) in [\d.]+s", re.MULTILINE)


def conformance_of(
    plugin: object, *, run: bool = False, python: str | None = None, timeout_s: float | None = None
) -> ConformanceInfo:
    """What ``caja plugins`` says of a provider plugin's conformance: its kit tests and the command that runs
    them; with ``run``, the result of running them now (pytest in a child process, bounded by ``timeout_s``)."""
    python = python or sys.executable
    root, tests = find_conformance_tests(plugin)
    if root is None or not tests:
        return ConformanceInfo(
            status="sin pruebas",
            detail="No se encontraron pruebas de conformidad del plugin (una subclase de ProviderConformance en "
            "tests/ junto a su pyproject.toml); escríbalas como en plugins/README.md.",
        )
    names = [str(path) for path in tests]
    command = f"{python} -m pytest -q {' '.join(names)}"
    if not run:
        return ConformanceInfo(status="sin verificar", tests=names, command=command)
    missing = [package for module, package in TEST_TOOLS.items() if not _importable(module)]
    if missing:
        return ConformanceInfo(
            status="sin verificar",
            tests=names,
            command=command,
            detail=f"Este entorno no tiene {' ni '.join(missing)}: instálelos para verificar "
            f"({python} -m pip install {' '.join(TEST_TOOLS.values())}).",
        )
    limit = timeout_s if timeout_s is not None else CHECK_TIMEOUT_S
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    try:
        result = subprocess.run(
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *names],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=limit,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ConformanceInfo(
            status="falla", tests=names, command=command, detail=f"Las pruebas no terminaron en {limit:g} s."
        )
    summary = _SUMMARY.search(result.stdout)
    text = summary.group("summary") if summary else (result.stdout.strip().splitlines() or ["sin resultado"])[-1]
    if result.returncode == 0:
        return ConformanceInfo(status="verificado", tests=names, command=command, detail=text)
    failed = [line[len("FAILED ") :] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    detail = text + ("; " + "; ".join(failed[:5]) if failed else "")
    return ConformanceInfo(status="falla", tests=names, command=command, detail=detail[:2000])


def describe_plugins(environ: dict[str, str] | None = None, *, check: bool = False) -> list[PluginInfo]:
    """Every installed plugin (entry-point group ``caja``) and every built-in one: whether it loads with the
    current ``CAJA_LOAD_PLUGINS``, the hooks it implements, the providers it registers and, for a plugin with
    providers, its conformance tests (run now with ``check``)."""
    pm = make_plugin_manager(environ=environ)
    registry = ProviderRegistry.from_plugin_manager(pm)
    owners: dict[str, str] = {}
    for impl in pm.hook.register_providers.get_hookimpls():

        def add(provider: Any, plugin: str = impl.plugin_name) -> None:
            owners[provider.id] = plugin

        impl.function(**dict.fromkeys(impl.argnames, add))

    def providers_of(plugin_name: str) -> list[ProviderInfo]:
        return [
            ProviderInfo(
                id=p.id,
                name=p.name,
                capabilities=sorted(c.value for c in p.capabilities),
                min_amount=p.min_amount,
                settings=describe_settings(p.Settings),
            )
            for p in registry.all()
            if owners.get(p.id) == plugin_name
        ]

    out: list[PluginInfo] = []
    for name, ep in sorted(installed_entry_points().items()):
        plugin = pm.get_plugin(name)
        providers = providers_of(name) if plugin is not None else []
        out.append(
            PluginInfo(
                name=name,
                source=ep.value,
                distribution=_distribution(ep),
                loaded=plugin is not None,
                hooks=_hooks_of(pm, plugin) if plugin is not None else [],
                providers=providers,
                conformance=conformance_of(plugin, run=check) if providers else None,
            )
        )
    for name, plugin in sorted(pm.list_name_plugin()):
        if plugin is None or name in installed_entry_points():
            continue
        providers = providers_of(name)
        out.append(
            PluginInfo(
                name=name,
                source="incorporado",
                distribution="",
                loaded=True,
                hooks=_hooks_of(pm, plugin),
                providers=providers,
                conformance=conformance_of(plugin, run=check) if providers else None,
            )
        )
    return out


def check_plugin_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ValidationFailed(
            f"Nombre de plugin inválido: {name!r}. Use minúsculas, dígitos y _ (2 a 31), empezando con una letra, "
            "p. ej. mipago.",
            field="name",
        )
    if name == CASH or name in ALWAYS_LOADED:
        raise ValidationFailed(f"El nombre {name!r} está reservado por caja; elija otro.", field="name")
    if name in installed_entry_points():
        raise ValidationFailed(f"Ya hay un plugin instalado con el nombre {name!r}; elija otro.", field="name")
    return name


def new_plugin(name: str, directory: Path, *, title: str | None = None) -> Path:
    """Write the package ``caja-<name>`` in ``directory`` from the template and return its folder. Refuses an
    existing folder (nothing is overwritten)."""
    check_plugin_name(name)
    title = " ".join((title or name.replace("_", " ").title()).split())
    if not title or any(c in title for c in '"\\{}') or len(title) > 60:
        raise ValidationFailed("El título debe tener hasta 60 caracteres, sin comillas ni llaves.", field="title")
    root = Path(directory) / f"caja-{name}"
    if root.exists():
        raise ValidationFailed(f"{root} ya existe; elija otra carpeta o bórrela.", field="directory")
    values = {"name": name, "title": title}
    for source in sorted(TEMPLATE.rglob("*.tmpl")):
        relative = source.relative_to(TEMPLATE).with_suffix("")  # drop .tmpl
        parts = [f"src/caja_{name}" if part == "src_pkg" else part for part in relative.parts]
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        target.write_text(text, encoding="utf-8")
    (root / "src" / f"caja_{name}" / "py.typed").write_text("", encoding="utf-8")
    return root


__all__ = [
    "ConformanceInfo",
    "PluginError",
    "PluginInfo",
    "ProviderInfo",
    "check_plugin_name",
    "conformance_of",
    "describe_plugins",
    "find_conformance_tests",
    "new_plugin",
]


#: What the generated conformance test needs besides caja (a server install of caja ships without them).
TEST_TOOLS = {"pytest": "pytest", "pytest_asyncio": "pytest-asyncio"}


def how_to_test(root: Path, python: str, *, installed: Callable[[str], bool] | None = None) -> list[str]:
    """The lines ``caja plugin new`` prints about running the new plugin's tests with ``python``: the command,
    and, when this environment lacks pytest or pytest-asyncio (caja installed from its wheels), how to get them."""
    if installed is None:
        installed = _importable
    lines = [f"  Pruebas:    {python} -m pytest {root / 'tests'}"]
    missing = [package for module, package in TEST_TOOLS.items() if not installed(module)]
    if missing:
        lines.append(
            f"              Este entorno no tiene {' ni '.join(missing)} (caja instalado sin herramientas de prueba);"
        )
        lines.append(f"              instálelas antes: {python} -m pip install {' '.join(TEST_TOOLS.values())}")
        lines.append(f"              (o con el plugin: {python} -m pip install -e '{root}[test]')")
    return lines


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None

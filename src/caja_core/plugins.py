"""Build the plugin manager: hook specs → entry-point plugins (group "caja") → default plugins.

Operators control loading with environment variables:

* ``CAJA_LOAD_PLUGINS`` — comma-separated entry-point names to load (``getnet,klap,web``). Unset loads
  every installed plugin; set to an empty string loads only the defaults.
* ``CAJA_TRACE_PLUGINS`` — ``1`` logs every hook call and result (logger ``caja.plugins``).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

log = logging.getLogger("caja.plugins")

ENTRY_POINT_GROUP = "caja"

DEFAULT_PLUGINS = (
    "caja_core.default_plugins.cash",
    "caja_core.default_plugins.selection",
    "caja_core.default_plugins.fallback_rules",
    "caja_core.ops.payment_metrics",
    "caja_core.printing.drivers",
)


def make_plugin_manager(
    *extra: object, load_entrypoints: bool = True, environ: dict[str, str] | None = None
) -> pluggy.PluginManager:
    env = os.environ if environ is None else environ
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if load_entrypoints:
        _load_entrypoints(pm, env.get("CAJA_LOAD_PLUGINS"))
    for name in DEFAULT_PLUGINS:
        mod = importlib.import_module(name)
        if not pm.is_registered(mod):
            pm.register(mod, name=name)
    for plugin in extra:
        pm.register(plugin)
    if env.get("CAJA_TRACE_PLUGINS", "").strip() not in ("", "0", "false"):
        pm.trace.root.setwriter(lambda msg: log.info("plugin trace: %s", msg.rstrip()))
        pm.enable_tracing()
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"Un plugin implementa un hook desconocido: {exc}") from exc
    return pm


def _load_entrypoints(pm: pluggy.PluginManager, only: str | None) -> None:
    wanted: set[str] | None = None
    if only is not None:
        wanted = {n.strip() for n in only.split(",") if n.strip()}
    available = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if wanted is not None:
        unknown = sorted(wanted - set(available))
        if unknown:
            raise PluginError(
                f"CAJA_LOAD_PLUGINS nombra plugins no instalados: {', '.join(unknown)} "
                f"(instalados: {', '.join(sorted(available)) or 'ninguno'})."
            )
    for name, ep in sorted(available.items()):
        if wanted is not None and name not in wanted:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin stops start-up with a clear message
            raise PluginError(f"No se pudo cargar el plugin {name!r} ({ep.value}): {exc}") from exc
        if pm.get_plugin(name) is None:
            pm.register(plugin, name=name)


def plugin_names(pm: pluggy.PluginManager) -> list[str]:
    return sorted(name for name, _ in pm.list_name_plugin())


def call_event(pm: pluggy.PluginManager, event: Any) -> None:
    """Fan an event out to ``on_payment_event``; a failing listener is logged, never raised."""
    try:
        pm.hook.on_payment_event(event=event)
    except Exception:  # listeners must not break the money path
        log.exception("on_payment_event listener failed")


def template_dirs(pm: pluggy.PluginManager) -> list[str]:
    dirs: list[str] = []
    for result in pm.hook.template_dirs():
        if result:
            dirs.extend(result)
    return dirs


def modules(pm: pluggy.PluginManager) -> Iterable[ModuleType]:
    return [p for p in pm.get_plugins() if isinstance(p, ModuleType)]

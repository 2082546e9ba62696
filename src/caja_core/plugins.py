"""Build the plugin manager: hook specs → entry-point plugins (group "caja") → default plugins.

Operators control loading with environment variables:

* ``CAJA_LOAD_PLUGINS`` — comma-separated entry-point names of the plugins to load. Unset loads every
  installed plugin; set to an empty string loads only the built-in ones. The web app (entry point ``web``) is
  part of caja, not an option: it is loaded whenever it is installed.
* ``CAJA_TRACE_PLUGINS`` — ``1`` logs every hook call and result (logger ``caja.plugins``).

Every problem with a plugin stops start-up with one line (a ``PluginError``) that names the plugin and says
what to fix: it cannot be imported, it implements a hook that does not exist or with arguments the hook does
not have, an operator named a plugin that is not installed.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginError

if TYPE_CHECKING:
    from .payments.events import PaymentEvent

log = logging.getLogger("caja.plugins")

ENTRY_POINT_GROUP = "caja"
#: Entry points that are parts of caja itself: loaded whatever ``CAJA_LOAD_PLUGINS`` says.
ALWAYS_LOADED = ("web",)

DEFAULT_PLUGINS = (
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
            _register(pm, mod, name)
    for plugin in extra:
        _register(pm, plugin, None)
    if env.get("CAJA_TRACE_PLUGINS", "").strip() not in ("", "0", "false"):
        pm.trace.root.setwriter(lambda msg: log.info("plugin trace: %s", msg.rstrip()))
        pm.enable_tracing()
    _check_unknown_hooks(pm)
    return pm


def _label(plugin: object, name: str | None) -> str:
    if name:
        return name
    return getattr(plugin, "__name__", None) or type(plugin).__name__


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    """Register one plugin, turning pluggy's validation errors into one line that says what to fix."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(_explain(plugin, name, str(exc))) from exc
    except ValueError as exc:  # registered twice under one name
        raise PluginError(f"El plugin {_label(plugin, name)!r} ya está registrado: {exc}") from exc


def _explain(plugin: object, name: str | None, raw: str) -> str:
    label = _label(plugin, name)
    for hook_name in dir(plugin):
        method = getattr(plugin, hook_name, None)
        spec = getattr(hookspecs, hook_name, None)
        if method is None or spec is None or not hasattr(spec, f"{hookspecs.PROJECT}_spec"):
            continue
        if not callable(method) or not hasattr(method, f"{hookspecs.PROJECT}_impl"):
            continue
        expected = list(inspect.signature(spec).parameters)
        given = [p for p in inspect.signature(method).parameters if p != "self"]
        unknown = [p for p in given if p not in expected]
        if unknown:
            return (
                f"El plugin {label!r} implementa el hook {hook_name} con argumentos que el hook no tiene: "
                f"{', '.join(unknown)} (el hook recibe: {', '.join(expected) or 'nada'})."
            )
    return f"El plugin {label!r} no es válido: {raw.splitlines()[0] if raw else 'error de validación'}."


def _check_unknown_hooks(pm: pluggy.PluginManager) -> None:
    for caller in pm.hook.__dict__.values():
        if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            known = sorted(
                n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, f"{hookspecs.PROJECT}_spec")
            )
            raise PluginError(
                f"El plugin {impl.plugin_name!r} implementa un hook que no existe: {caller.name} "
                f"(los hooks de caja son: {', '.join(known)})."
            )


def installed_entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load_entrypoints(pm: pluggy.PluginManager, only: str | None) -> None:
    wanted: set[str] | None = None
    if only is not None:
        wanted = {n.strip() for n in only.split(",") if n.strip()}
    available = installed_entry_points()
    if wanted is not None:
        unknown = sorted(wanted - set(available))
        if unknown:
            raise PluginError(
                f"CAJA_LOAD_PLUGINS nombra plugins no instalados: {', '.join(unknown)} "
                f"(instalados: {', '.join(sorted(available)) or 'ninguno'})."
            )
    for name, ep in sorted(available.items()):
        if wanted is not None and name not in wanted and name not in ALWAYS_LOADED:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin stops start-up with a clear message
            raise PluginError(f"No se pudo cargar el plugin {name!r} ({ep.value}): {exc}") from exc
        if pm.get_plugin(name) is None:
            _register(pm, plugin, name)


#: How long a plugin's ``on_payment_event`` listener may take with one event before it is logged and counted as
#: slow (an ``async def`` listener is cancelled then). The payment never waits for it.
LISTENER_TIMEOUT_S = 5.0
#: Events waiting for one plugin's synchronous listener; beyond this they are dropped (logged and counted).
LISTENER_QUEUE_MAX = 1000
#: Listeners written in caja itself (the audit, the metrics, printing): they only queue work, and run inline.
_CORE_PREFIX = "caja_core."


def call_event(pm: pluggy.PluginManager, event: PaymentEvent) -> None:
    """Fan an event out to every ``on_payment_event`` listener. Each runs on its own: one that raises is
    logged and counted (``caja_plugin_listener_failures_total{plugin}``) and the others still run.

    On a running event loop (the payment flow) a plugin's listener never holds it: an ``async def`` listener
    runs as its own task, cancelled after ``LISTENER_TIMEOUT_S``; a synchronous one runs in that plugin's own
    thread, in order. One still running after ``LISTENER_TIMEOUT_S`` (or whose queue is full) is logged and
    counted (``caja_plugin_listener_slow_total{plugin}``). caja's own listeners only queue work and run inline."""
    caller = pm.hook.on_payment_event
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    for impl in reversed(caller.get_hookimpls()):  # pluggy's order: the last registered first
        function = impl.function
        kwargs = dict.fromkeys(impl.argnames, event)
        try:
            if inspect.iscoroutinefunction(function):
                if loop is None:
                    asyncio.run(_bounded_listener(impl.plugin_name, function(**kwargs)))
                else:
                    task = loop.create_task(
                        _bounded_listener(impl.plugin_name, function(**kwargs)),
                        name=f"caja-listener-{impl.plugin_name}",
                    )
                    _LISTENER_TASKS.add(task)
                    task.add_done_callback(_LISTENER_TASKS.discard)
            elif loop is None or str(getattr(function, "__module__", "")).startswith(_CORE_PREFIX):
                function(**kwargs)
            else:
                _worker(pm, impl.plugin_name).submit(loop, function, kwargs)
        except Exception:  # one listener never breaks the money path nor the other listeners
            log.exception("on_payment_event listener failed (plugin %s)", impl.plugin_name)
            _count_listener_failure(impl.plugin_name)


_LISTENER_TASKS: set[asyncio.Task[None]] = set()
_WORKERS: weakref.WeakKeyDictionary[pluggy.PluginManager, dict[str, _ListenerWorker]] = weakref.WeakKeyDictionary()
_WORKERS_LOCK = threading.Lock()


async def _bounded_listener(plugin: str, call: Any) -> None:
    try:
        await asyncio.wait_for(call, LISTENER_TIMEOUT_S)
    except TimeoutError:
        log.warning("on_payment_event listener of plugin %s took over %g s: cancelled", plugin, LISTENER_TIMEOUT_S)
        _count_listener_slow(plugin)
    except Exception:
        log.exception("on_payment_event listener failed (plugin %s)", plugin)
        _count_listener_failure(plugin)


class _ListenerWorker:
    """One plugin's synchronous listener, run in its own daemon thread: events in order, off the event loop."""

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self.jobs: queue.Queue[tuple[Callable[..., Any], dict[str, Any], threading.Event]] = queue.Queue(
            LISTENER_QUEUE_MAX
        )
        self.thread = threading.Thread(target=self._run, name=f"caja-listener-{plugin}", daemon=True)
        self.thread.start()

    def submit(self, loop: asyncio.AbstractEventLoop, function: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        done = threading.Event()
        try:
            self.jobs.put_nowait((function, kwargs, done))
        except queue.Full:
            log.warning(
                "on_payment_event listener of plugin %s is %d events behind: event dropped",
                self.plugin,
                LISTENER_QUEUE_MAX,
            )
            _count_listener_slow(self.plugin)
            return
        loop.call_later(LISTENER_TIMEOUT_S, self._check, done)

    def _check(self, done: threading.Event) -> None:
        if not done.is_set():
            log.warning(
                "on_payment_event listener of plugin %s still running after %g s (the payment did not wait)",
                self.plugin,
                LISTENER_TIMEOUT_S,
            )
            _count_listener_slow(self.plugin)

    def _run(self) -> None:
        while True:
            function, kwargs, done = self.jobs.get()
            try:
                function(**kwargs)
            except Exception:
                log.exception("on_payment_event listener failed (plugin %s)", self.plugin)
                _count_listener_failure(self.plugin)
            finally:
                done.set()


def _worker(pm: pluggy.PluginManager, plugin: str) -> _ListenerWorker:
    with _WORKERS_LOCK:
        workers = _WORKERS.setdefault(pm, {})
        if plugin not in workers:
            workers[plugin] = _ListenerWorker(plugin)
        return workers[plugin]


def _count_listener_failure(plugin: str) -> None:
    try:
        from .ops import metrics

        metrics.PLUGIN_LISTENER_FAILURES.labels(plugin=plugin).inc()
    except Exception:  # the metric is best effort; the log line above already says it
        log.debug("could not count a listener failure", exc_info=True)


def _count_listener_slow(plugin: str) -> None:
    try:
        from .ops import metrics

        metrics.PLUGIN_LISTENER_SLOW.labels(plugin=plugin).inc()
    except Exception:  # best effort, as above
        log.debug("could not count a slow listener", exc_info=True)


def template_dirs(pm: pluggy.PluginManager) -> list[str]:
    dirs: list[str] = []
    for result in pm.hook.template_dirs():
        if result:
            dirs.extend(result)
    return dirs

"""/admin/cajas/: list, create, edit (all fields, fallback policy, provider settings), test the terminal,
rotate the agent token."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Template

from caja_core.catalog import service as catalog
from caja_core.fallback.policy import default_policy
from caja_core.jornadas import service as jornadas
from caja_core.payments import breaker as breakers
from caja_core.payments import terminal_probe
from caja_core.providers import ProviderRegistry
from caja_core.registers import service as registers
from caja_core.sessions import service as sessions

from ..context import Web
from . import forms

TEST_TIMEOUT_S = 10.0


def register_values(register: registers.RegisterOut | None, registry: ProviderRegistry) -> dict[str, Any]:
    """The form's initial values: the register's, or for a new one what the installed plugins propose."""
    base: registers.RegisterInput | registers.RegisterOut
    if register is None:
        defaults = registry.defaults_for("HUMANA")
        base = registers.RegisterInput(
            code="",
            name="",
            primary_provider=defaults.primary_provider,
            backup_provider=defaults.backup_provider,
            provider_settings=defaults.provider_settings,
        )
        policy = default_policy(base.register_type)
        devices: dict[str, Any] = {}
    else:
        base, policy, devices = register, register.policy, register.devices
    values: dict[str, Any] = {
        "code": base.code,
        "name": base.name,
        "register_type": base.register_type,
        "location": base.location,
        "operational_status": base.operational_status,
        "payment_methods": list(base.payment_methods),
        "primary_provider": base.primary_provider or "",
        "backup_provider": base.backup_provider or "",
        "allowed_categories": [str(c) for c in (base.allowed_categories or [])],
        **{f"devices.{k}": v for k, v in devices.items()},
        **{f"policy.{k}": v for k, v in msgspec.to_builtins(policy).items() if k not in ("decline_codes",)},
        "policy.decline_codes": ", ".join(policy.decline_codes),
    }
    values["policy.triggers"] = list(policy.triggers)
    values["policy.offline_methods"] = list(policy.offline_methods)
    for flag in ("active",):
        if getattr(base, flag):
            values[flag] = "1"
    for flag in ("enabled", "require_supervisor"):
        if getattr(policy, flag):
            values[f"policy.{flag}"] = "1"
        else:
            values.pop(f"policy.{flag}", None)
    return values


async def form_context(web: Web, register_id: int | None = None, values: dict | None = None) -> dict:
    register = await web.call(registers.get_register, web.venue_id, register_id) if register_id else None
    # Providers this register has whose plugin this server did not load: offered as they are, never dropped.
    unloaded = [
        pid
        for pid in dict.fromkeys([register.primary_provider, register.backup_provider] if register else [])
        if pid and pid not in web.registry
    ]
    return {
        "register": register,
        "values": values if values is not None else register_values(register, web.registry),
        "providers": web.registry.all(),
        "unloaded": unloaded,
        "settings_fields": forms.settings_fields(
            web.registry,
            register.provider_settings if register else web.registry.defaults_for("HUMANA").provider_settings,
        ),
        "categories": await web.call(catalog.list_categories, web.venue_id),
        "types": registers.REGISTER_TYPE_LABELS,
        "statuses": registers.STATUS_LABELS,
        "methods": registers.METHOD_LABELS,
        "policy_labels": forms.POLICY_LABELS,
        "triggers": forms.TRIGGER_LABELS,
        "offline": forms.OFFLINE_LABELS,
    }


async def list_context(web: Web) -> dict:
    current = await web.call(jornadas.current_jornada, web.venue_id)
    open_sessions = await web.call(sessions.list_sessions, web.venue_id, jornada_id=current.id) if current else []
    breaker_rows = await web.call(breakers.all_states, web.venue_id)
    return {
        "registers": await web.call(registers.list_registers, web.venue_id),
        "open_by_register": {s.register_id: s for s in open_sessions if s.status != "closed"},
        "breakers": {b.register_id: b.state for b in breaker_rows if b.state != "closed"},
    }


@get("/cajas/")
async def register_list(request: Request) -> Template:
    web = Web(request)
    return await web.page("admin/registers.html", **await list_context(web))


@get("/cajas/crear")
async def create_page(request: Request) -> Template:
    web = Web(request)
    return await web.page("admin/register_form.html", **await form_context(web))


@post("/cajas/crear")
async def create_register(request: Request) -> Response:
    web = Web(request)
    form = await request.form()
    async with web.form("admin/register_form.html", lambda: form_context(web, values=forms.form_values(form))):
        data = forms.register_input(form, web.registry)
        register = await web.venue_call(
            registers.create_register, data=data, registry=web.registry, actor_id=web.user_id
        )
    return web.redirect(f"/admin/cajas/{register.id}/editar?guardado=1")


@get("/cajas/{register_id:int}/editar")
async def edit_page(request: Request, register_id: FromPath[int]) -> Template:
    web = Web(request)
    return await web.page("admin/register_form.html", **await form_context(web, register_id))


@post("/cajas/{register_id:int}/editar")
async def update_register(request: Request, register_id: FromPath[int]) -> Response:
    web = Web(request)
    form = await request.form()
    async with web.form(
        "admin/register_form.html", lambda: form_context(web, register_id, values=forms.form_values(form))
    ):
        data = forms.register_input(form, web.registry)
        await web.venue_call(
            registers.update_register, register_id=register_id, data=data, registry=web.registry, actor_id=web.user_id
        )
    return web.redirect(f"/admin/cajas/{register_id}/editar?guardado=1")


@post("/cajas/{register_id:int}/probar")
async def test_terminal(request: Request, register_id: FromPath[int]) -> Template:
    web = Web(request)
    result = await terminal_probe.probe_terminal(
        web.db,
        web.registry,
        web.venue_id,
        register_id,
        agent_channel_factory=getattr(web.orchestrator, "agent_channel_factory", None),
        timeout_s=TEST_TIMEOUT_S,
        leases=getattr(web.orchestrator, "leases", None),
    )
    return await web.page(
        "admin/register_form.html",
        partial_template="admin/_terminal_test.html",
        full_context=lambda: form_context(web, register_id),
        test=result,
    )


@post("/cajas/{register_id:int}/token")
async def rotate_token(request: Request, register_id: FromPath[int]) -> Template:
    web = Web(request)
    token = await web.venue_call(registers.rotate_agent_token, register_id=register_id, actor_id=web.user_id)
    return await web.page(
        "admin/register_form.html",
        partial_template="admin/_agent_token.html",
        full_context=lambda: form_context(web, register_id),
        agent_token=token,
    )


route_handlers = [register_list, create_page, create_register, edit_page, update_register, test_terminal, rotate_token]

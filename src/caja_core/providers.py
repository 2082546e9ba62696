"""The per-payment provider API: a ``typing.Protocol`` every payment plugin implements.

A provider holds only its own protocol and settings. The core owns the state machine, persistence, locks,
deadlines and fallback; it calls the provider with a validated ``Settings`` instance and a
``ChargeRequest`` and gets back an ``Outcome``.

Outcome kinds (what the core may conclude from them):

* ``APPROVED``    — the provider charged exactly this ticket and amount (``amount`` filled; the core takes an
  approval without a whole amount above zero for a provider error and keeps the attempt in doubt).
* ``DECLINED``    — definitive refusal; nothing was charged.
* ``PENDING``     — accepted, the final answer comes later (webhook, manual confirmation).
* ``UNAVAILABLE`` — provably nothing was charged (port missing, connection refused, no receipt and the
  terminal does not know the ticket). Safe to fall back.
* ``UNKNOWN``     — in doubt: anything else (time-out after receipt, corrupt or mismatched reply). Never
  safe to fall back without reconciliation.
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
import typing
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec
import msgspec.inspect as mi

from .carddata import scrub_text
from .errors import CajaError, PluginError, ValidationFailed
from .validation_text import spanish_validation


class OutcomeKind(enum.StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    PENDING = "pending"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"


#: ``Outcome.code`` of an UNKNOWN answer to ``status`` when the device itself could not be reached (no connection,
#: no receipt): caja then knows it lost sight of the device for a while (see ``terminal_ops.close_by_the_device``).
UNREACHABLE = "unreachable"


class Capability(enum.StrEnum):
    INTEGRATED = "integrated"  # the provider talks to a device/API by itself (charge returns a final answer)
    MANUAL = "manual"  # a person charges elsewhere and confirms with references
    WEBHOOK = "webhook"  # final answers may arrive at /webhooks/{provider_id}
    CANCEL = "cancel"  # an in-progress charge can be cancelled
    REFUND = "refund"  # an approved charge can be refunded/voided
    STATUS = "status"  # what happened to a ticket can be asked (reconciliation)
    IDENTIFY = "identify"  # the device can say who it is (``identify``): serial number, terminal id
    TERMINAL_REPORT = "terminal_report"  # the device lists what it charged since its last batch close
    BATCH_CLOSE = "batch_close"  # caja can run the device's batch close (``close_batch``)
    #: the provider's own sales report verifies its manual payments at the end of the night (``parse_report``,
    #: ``report_matches``; optional ``report_help`` and ``normalise_authorization_code``)
    SALES_REPORT = "sales_report"


#: The provider id recorded on cash sales. Cash is not a provider plugin (the core records it in the sale's own
#: transaction, docs/architecture.md "Money, time, sessions"), so no plugin may take this id.
CASH = "cash"


class CardData(msgspec.Struct, frozen=True, kw_only=True):
    """What may be kept about a card (docs/architecture.md, "No card data"). Never a full number, track, CVV or PIN."""

    brand: str | None = None
    card_type: str | None = None  # "debito" / "credito" / provider's code
    last4: str | None = None
    authorization_code: str | None = None
    operation_id: str | None = None
    terminal_id: str | None = None
    installments: int | None = None

    def __post_init__(self) -> None:
        # A provider that puts a card number where a brand or a code goes never gets it stored.
        for field in ("brand", "card_type", "last4", "authorization_code", "operation_id", "terminal_id"):
            value = getattr(self, field)
            if isinstance(value, str) and value:
                msgspec.structs.force_setattr(self, field, scrub_text(value))


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    kind: OutcomeKind
    code: str | None = None  # the provider's response code, kept verbatim
    message: str = ""  # the provider's message, for people
    ticket: str | None = None  # the ticket the provider says this answer is for
    amount: int | None = None  # the amount the provider says it charged
    card: CardData | None = None
    reference: str | None = None  # provider-side reference (order id, operation id)
    occurred_at: datetime | None = None  # when the device says the operation happened (aware UTC)

    def __post_init__(self) -> None:
        # Whatever a provider read from its device or API, no card number or track reaches the core.
        for field in ("message", "code", "reference"):
            value = getattr(self, field)
            if isinstance(value, str) and value:
                msgspec.structs.force_setattr(self, field, scrub_text(value))

    @property
    def is_final(self) -> bool:
        return self.kind in (OutcomeKind.APPROVED, OutcomeKind.DECLINED, OutcomeKind.UNAVAILABLE)


class DeviceIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """Who a device says it is. The same physical device gives the same ``identity`` however it is reached
    (another spelling of its address, another port, through an agent)."""

    identity: str  # stable and unique for the physical device, e.g. "<model>:<serial number>"
    label: str = ""  # for people: model, serial number, terminal id
    clock: datetime | None = None  # the device's own clock when it answered (aware UTC), to measure skew


class TerminalSale(msgspec.Struct, frozen=True, kw_only=True):
    """One operation in a device's own list of what it did since its last batch close."""

    ticket: str
    amount: int
    approved: bool
    authorization_code: str | None = None
    occurred_at: datetime | None = None  # the device's date/time of the operation (aware UTC)
    card: CardData | None = None


class TerminalReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a device says it charged since its last batch close: its totals and, when it gives them, the
    operations one by one."""

    count: int
    total: int
    sales: list[TerminalSale] = []
    taken_at: datetime | None = None  # the device's clock when it answered (aware UTC)
    #: how many sales of this batch were voided on the device, and for how much (None: the device does not say).
    #: A voided sale leaves the list (or is listed as not approved); it is not a batch close.
    voided_count: int | None = None
    voided_total: int | None = None


class Progress(msgspec.Struct, frozen=True):
    """An intermediate message (insert card, PIN…). Progress is never a result."""

    message: str
    code: int | None = None

    def __post_init__(self) -> None:
        if self.message:
            msgspec.structs.force_setattr(self, "message", scrub_text(self.message))


ProgressCallback = Callable[[Progress], Awaitable[None]]


_log = logging.getLogger("caja.payments")


def checked_outcome(value: object, *, provider_id: str, method: str) -> Outcome:
    """``value`` if it is an ``Outcome`` of a known kind (a kind given as its text, ``"approved"``, is taken
    as that kind); anything else a provider returns (None, a dict, an unknown kind) is one logged line and
    UNKNOWN: it proves nothing, so the attempt is reconciled, never paid or given up on by it."""
    if isinstance(value, Outcome):
        if isinstance(value.kind, OutcomeKind):
            return value
        try:
            return msgspec.structs.replace(value, kind=OutcomeKind(value.kind))
        except (ValueError, TypeError):
            what = f"an Outcome of unknown kind {value.kind!r}"[:120]
    else:
        what = type(value).__name__
    _log.warning("provider %s: %s returned %s instead of an Outcome; taken as UNKNOWN", provider_id, method, what)
    return Outcome(kind=OutcomeKind.UNKNOWN, message=f"Respuesta inválida del proveedor ({method}).")


def device_key_of(provider: PaymentProvider, settings: Any, register_code: str) -> str:
    """``provider.device_key(settings, register_code)``, checked: a key that is no text of 1–160 characters, or
    an exception, is one logged line and a Spanish refusal (nothing is sent), never a database error."""
    try:
        key = provider.device_key(settings, register_code)
    except CajaError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not become a 500 at the register
        what = f"raised {type(exc).__name__}: {str(exc)[:120]}"
    else:
        if isinstance(key, str) and 0 < len(key) <= 160:
            return key
        what = f"returned {type(key).__name__} of length {len(key) if isinstance(key, str) else '-'}"
    _log.warning("provider %s: device_key %s; nothing sent", getattr(provider, "id", "?"), what)
    raise ValidationFailed(
        f"{getattr(provider, 'name', 'El proveedor')} no pudo identificar su terminal con la configuración de esta "
        "caja: no se envió nada. Revise la configuración de la caja en Administración.",
        code="provider.device_key_invalid",
    )


async def ask_provider(provider_id: str, method: str, call: Coroutine[Any, Any, object]) -> Outcome:
    """Await a provider's ``charge``/``status``/``cancel``/``refund``/``health`` and check its answer."""
    return checked_outcome(await call, provider_id=provider_id, method=method)


class ChargeRequest(msgspec.Struct, frozen=True, kw_only=True):
    attempt_id: int
    ticket: str  # unique per device until its batch close: the idempotency key
    amount: int  # whole CLP, the tip included
    register_id: int
    register_code: str
    venue_id: int
    device_key: str  # what the provider said identifies the device (locks, breaker)
    description: str = ""
    employee_id: str | None = None
    reference: str | None = None  # short human reference for manual providers
    card: CardData | None = None  # known card data (refund/return by authorization code)
    tip: int = 0  # the part of ``amount`` that is the customer's tip (for devices that record it apart)


class WebhookNotice(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider made of an incoming webhook, before the core checks it against the attempt."""

    external_id: str  # the provider's id for this notification's subject (order id): idempotency
    reference: str  # our reference (attempt id) the provider echoes back
    outcome: Outcome


class AgentChannel(Protocol):
    """How a provider reaches a device that hangs off a register PC (through ``caja agent``)."""

    async def exchange(
        self, command: dict[str, Any], *, deadline_s: float, progress: ProgressCallback | None = None
    ) -> dict[str, Any]: ...


class ProviderContext(msgspec.Struct, frozen=True, kw_only=True):
    """Per-call context the core hands a provider. ``agent`` is set when the register uses an agent."""

    register_id: int
    venue_id: int
    agent: Any = None


@runtime_checkable
class PaymentProvider(Protocol):
    """What a payment plugin implements. See plugins/README.md for the contract of each method."""

    # Read-only for the core: a provider may define them as class attributes, instance attributes or properties.
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def Settings(self) -> type[msgspec.Struct]: ...
    @property
    def capabilities(self) -> frozenset[Capability]: ...
    @property
    def min_amount(self) -> int: ...

    def device_key(self, settings: Any, register_code: str) -> str: ...

    async def charge(
        self, request: ChargeRequest, settings: Any, ctx: ProviderContext, progress: ProgressCallback
    ) -> Outcome: ...

    async def status(self, request: ChargeRequest, settings: Any, ctx: ProviderContext) -> Outcome: ...

    async def cancel(self, request: ChargeRequest, settings: Any, ctx: ProviderContext) -> Outcome: ...

    async def refund(self, request: ChargeRequest, settings: Any, ctx: ProviderContext) -> Outcome: ...

    async def health(self, settings: Any, ctx: ProviderContext) -> Outcome: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice: ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, settings: Any) -> bool: ...


def validate_settings(provider: PaymentProvider, raw: Mapping[str, Any] | None) -> Any:
    """Turn a register's stored JSON into the provider's ``Settings`` instance, with a Spanish error."""
    try:
        settings = msgspec.convert(dict(raw or {}), provider.Settings, strict=False)
        for name in settings.__struct_fields__:
            value = getattr(settings, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise msgspec.ValidationError(f"Expected a finite number - at `$.{name}`")
    except msgspec.ValidationError as exc:
        message = str(exc)
        if message.startswith("Expected a finite number"):
            message = f"{_where_of(message, provider.Settings)}: debe ser un número"
        elif message.startswith(("Expected", "Object ", "Invalid")):  # msgspec's own English
            message = spanish_validation(message, _titles(provider.Settings))
        raise ValidationFailed(
            f"Configuración inválida para {provider.name}: {message}.",
            code="provider.settings_invalid",
            field=f"settings_{provider.id}",
        ) from exc
    return settings


def _titles(settings_cls: type[msgspec.Struct]) -> dict[str, str]:
    try:
        return {spec.name: spec.title for spec in describe_settings(settings_cls)}
    except Exception:  # noqa: BLE001 - the titles only make the message friendlier
        return {}


def _where_of(message: str, settings_cls: type[msgspec.Struct]) -> str:
    name = message.rpartition("$.")[2].rstrip("`")
    return f"campo «{_titles(settings_cls).get(name, name)}»"


def settings_to_json(settings: msgspec.Struct) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(settings)
    return data


_ASYNC_METHODS = ("charge", "status", "cancel", "refund", "health")
_SYNC_METHODS = ("parse_webhook", "verify_webhook", "device_key")
#: Optional methods and whether they are coroutines (checked when the provider has them).
_OPTIONAL_METHODS = {
    "identify": True,
    "terminal_report": True,
    "close_batch": True,
    "outcome_from_agent_result": False,
    "capabilities_for": False,
    "parse_report": False,
    "report_matches": False,
    "normalise_authorization_code": False,
}
#: What each capability needs beyond the contract's methods.
_CAPABILITY_METHODS = {
    Capability.IDENTIFY: ("identify",),
    Capability.TERMINAL_REPORT: ("terminal_report",),
    Capability.BATCH_CLOSE: ("close_batch",),
    Capability.SALES_REPORT: ("parse_report", "report_matches"),
}


class ProviderDefault(msgspec.Struct, frozen=True, kw_only=True):
    """What a plugin proposes for a new register (hook ``provider_defaults``): its provider as the primary or
    the backup, with starting settings (the register's admin may change everything)."""

    provider_id: str
    role: Literal["primary", "backup"]
    settings: dict[str, Any] = {}


class RegisterDefaults(msgspec.Struct, frozen=True, kw_only=True):
    """The providers and settings a new register of one type starts with."""

    primary_provider: str | None = None
    backup_provider: str | None = None
    provider_settings: dict[str, dict[str, Any]] = {}


def check_provider(provider: Any) -> None:
    """Raise a ``PluginError`` (one line, naming the provider) if ``provider`` does not keep the
    ``PaymentProvider`` contract's shape: id, name, a msgspec ``Settings`` Struct, capabilities, minimum
    amount, every method present and async or synchronous as the contract says."""
    pid = getattr(provider, "id", None)
    if not isinstance(pid, str) or not pid.isidentifier() or pid.lower() != pid:
        raise PluginError(f"Proveedor con id inválido: {pid!r} (se espera un identificador en minúsculas).")
    if pid == CASH:
        raise PluginError(f"El id {CASH!r} está reservado para las ventas en efectivo; elija otro para el proveedor.")
    name = getattr(provider, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise PluginError(
            f"El proveedor {pid!r} no tiene `name` (el nombre que ven las personas, p. ej. en la boleta)."
        )
    missing = [m for m in (*_ASYNC_METHODS, *_SYNC_METHODS) if not callable(getattr(provider, m, None))]
    if missing:
        raise PluginError(f"El proveedor {pid!r} no cumple PaymentProvider: faltan los métodos {', '.join(missing)}.")
    settings_cls = getattr(provider, "Settings", None)
    if settings_cls is None:
        raise PluginError(f"El proveedor {pid!r} no tiene `Settings` (una clase msgspec.Struct con su configuración).")
    if not (isinstance(settings_cls, type) and issubclass(settings_cls, msgspec.Struct)):
        kind = settings_cls.__name__ if isinstance(settings_cls, type) else type(settings_cls).__name__
        raise PluginError(
            f"El proveedor {pid!r} declara `Settings` = {kind}, que no es una clase msgspec.Struct "
            "(escriba `class Settings(msgspec.Struct, kw_only=True): ...`)."
        )
    caps = getattr(provider, "capabilities", None)
    if not isinstance(caps, frozenset | set) or not all(isinstance(c, Capability) for c in caps):
        raise PluginError(f"El proveedor {pid!r}: `capabilities` debe ser un frozenset de Capability.")
    lacking = [
        f"{capability.value} necesita {m}"
        for capability, methods in _CAPABILITY_METHODS.items()
        if capability in caps
        for m in methods
        if not callable(getattr(provider, m, None))
    ]
    if lacking:
        raise PluginError(f"El proveedor {pid!r} declara capacidades sin sus métodos: {', '.join(lacking)}.")
    min_amount = getattr(provider, "min_amount", None)
    if not isinstance(min_amount, int) or isinstance(min_amount, bool) or min_amount < 1:
        raise PluginError(f"El proveedor {pid!r}: `min_amount` debe ser un entero de pesos ≥ 1.")
    wrong = [m for m in _ASYNC_METHODS if not inspect.iscoroutinefunction(getattr(provider, m))]
    wrong += [
        m
        for m, must_be_async in _OPTIONAL_METHODS.items()
        if callable(getattr(provider, m, None)) and inspect.iscoroutinefunction(getattr(provider, m)) != must_be_async
    ]
    wrong += [m for m in _SYNC_METHODS if inspect.iscoroutinefunction(getattr(provider, m))]
    if wrong:
        described = ", ".join(
            f"{m} debe ser {'async def' if (m in _ASYNC_METHODS or _OPTIONAL_METHODS.get(m)) else 'def (síncrono)'}"
            for m in wrong
        )
        raise PluginError(f"El proveedor {pid!r}: {described}.")


class ProviderRegistry:
    """The validated set of providers, built once at start-up from the ``register_providers`` hook."""

    def __init__(self, providers: Mapping[str, PaymentProvider], pm: Any = None) -> None:
        self._providers = dict(providers)
        self._pm = pm

    @classmethod
    def from_plugin_manager(cls, pm: Any) -> ProviderRegistry:
        found: dict[str, PaymentProvider] = {}
        owner: dict[str, str] = {}
        for impl in reversed(pm.hook.register_providers.get_hookimpls()):
            plugin = impl.plugin_name

            def add_provider(provider: PaymentProvider, plugin: str = plugin) -> None:
                try:
                    check_provider(provider)
                except PluginError as exc:
                    raise PluginError(f"Plugin {plugin!r}: {exc.message}") from None
                if provider.id in found:
                    raise PluginError(
                        f"Proveedor duplicado: {provider.id!r} lo registran los plugins {owner[provider.id]!r} y "
                        f"{plugin!r}."
                    )
                found[provider.id] = provider
                owner[provider.id] = plugin

            try:
                impl.function(**dict.fromkeys(impl.argnames, add_provider))
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"El plugin {plugin!r} falló al registrar sus proveedores: {exc!r}") from exc
        return cls(found, pm)

    def get(self, provider_id: str) -> PaymentProvider:
        try:
            return self._providers[provider_id]
        except KeyError:
            raise ValidationFailed(
                f"El proveedor de pago {provider_id!r} no está cargado en este servidor: avise al administrador.",
                code="provider.unknown",
            ) from None

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self._providers

    def ids(self) -> list[str]:
        return sorted(self._providers)

    def all(self) -> list[PaymentProvider]:
        return [self._providers[k] for k in self.ids()]

    def name(self, provider_id: str | None) -> str:
        """What people read for a provider id: its ``name``; "Efectivo" for cash sales."""
        if not provider_id:
            return "—"
        if provider_id == CASH:
            return "Efectivo"
        provider = self._providers.get(provider_id)
        return provider.name if provider is not None else provider_id

    def names(self) -> dict[str, str]:
        return {CASH: "Efectivo", **{p.id: p.name for p in self.all()}}

    def with_capability(self, capability: Capability) -> list[PaymentProvider]:
        return [p for p in self.all() if capability in p.capabilities]

    def defaults_for(self, register_type: str, *, demo_url: str | None = None) -> RegisterDefaults:
        """The providers a new register of ``register_type`` starts with, as the plugins propose them (hook
        ``provider_defaults``): the first primary proposed, the first backup that is another provider (none
        for a VIRTUAL register), and their settings. Proposals for providers not loaded are ignored."""
        if self._pm is None:
            return RegisterDefaults()
        proposals: list[ProviderDefault] = []
        for answer in self._pm.hook.provider_defaults(register_type=register_type, demo_url=demo_url):
            for proposal in answer or []:
                if isinstance(proposal, ProviderDefault) and proposal.provider_id in self._providers:
                    proposals.append(proposal)
        primary = next((p for p in proposals if p.role == "primary"), None)
        backup = None
        if register_type != "VIRTUAL":
            backup = next(
                (
                    p
                    for p in proposals
                    if p.role == "backup" and (primary is None or p.provider_id != primary.provider_id)
                ),
                None,
            )
        chosen = [p for p in (primary, backup) if p is not None]
        return RegisterDefaults(
            primary_provider=primary.provider_id if primary else None,
            backup_provider=backup.provider_id if backup else None,
            provider_settings={p.provider_id: dict(p.settings) for p in chosen if p.settings},
        )


class SettingSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One field of a plugin's ``Settings`` as forms and ``caja plugins`` show it. ``title`` and
    ``description`` are the plugin's own words (``msgspec.Meta(title=…, description=…)``); without a title the
    field's name is shown."""

    name: str
    title: str
    description: str = ""
    kind: Literal["text", "number", "checkbox", "select", "password"] = "text"
    options: tuple[str, ...] = ()
    default: Any = None
    required: bool = False
    secret: bool = False


#: Fields whose name says they hold a secret (in English or Spanish, any case): never rendered back, never logged.
SECRET_FIELD_WORDS = (
    "secret",
    "secreto",
    "password",
    "passwd",
    "contrasena",
    "contraseña",
    "clave",
    "llave",
    "token",
    "api_key",
    "apikey",
    "credential",
    "credencial",
    "authorization",
)


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_FIELD_WORDS) or lowered.endswith(("_key", "key"))


def _kind_of(t: Any) -> tuple[str, tuple[str, ...]]:
    if isinstance(t, mi.Metadata):
        return _kind_of(t.type)
    if isinstance(t, mi.LiteralType):
        return "select", tuple(str(v) for v in t.values)
    if isinstance(t, mi.EnumType):
        return "select", tuple(str(m.value) for m in t.cls)
    if isinstance(t, mi.UnionType):
        inner = [x for x in t.types if not isinstance(x, mi.NoneType)]
        return _kind_of(inner[0]) if inner else ("text", ())
    if isinstance(t, mi.BoolType):
        return "checkbox", ()
    if isinstance(t, mi.IntType | mi.FloatType):
        return "number", ()
    return "text", ()


def describe_settings(settings_cls: type[msgspec.Struct]) -> list[SettingSpec]:
    """The fields of a provider's (or printer's) ``Settings`` Struct, with the plugin's titles and help."""
    info = mi.type_info(settings_cls)
    assert isinstance(info, mi.StructType)
    hints = typing.get_type_hints(settings_cls)
    out: list[SettingSpec] = []
    for f in info.fields:
        meta = f.type.extra_json_schema or {} if isinstance(f.type, mi.Metadata) else {}
        kind, options = _kind_of(f.type)
        if typing.get_origin(hints.get(f.name)) is Literal:  # the plugin's order, not msgspec's
            options = tuple(str(v) for v in typing.get_args(hints[f.name]))
        secret = is_secret_field(f.name)
        default = None if f.default is msgspec.NODEFAULT else f.default
        out.append(
            SettingSpec(
                name=f.name,
                title=str(meta.get("title") or f.name.replace("_", " ").capitalize()),
                description=str(meta.get("description") or ""),
                kind="password" if secret else kind,  # type: ignore[arg-type]
                options=options,
                default=None if secret else default,
                required=f.required,
                secret=secret,
            )
        )
    return out

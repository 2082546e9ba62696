"""KLAP as caja's backup payment provider.

Two modes, chosen per register in ``KlapSettings.mode``:

* ``manual`` (default) — tap-on-phone. The KLAP app on an Android phone has no integration API, so
  ``charge`` only hands out a short human reference (``Outcome.kind == PENDING``, ``code == "manual"``).
  The cashier charges the exact amount on the phone and confirms with the authorization code and the last
  4 digits; the core records the attempt as ``manual_pending → approved_manual`` and verifies it at the end
  of the night against KLAP's sales report.
* ``checkout`` — KLAP Checkout (card not present). ``charge`` creates an order at the KLAP API with
  ``reference_id`` = our attempt id and returns PENDING (``code == "checkout"``, ``reference`` = KLAP's
  order id). The final answer arrives as a webhook at ``/webhooks/klap`` or through ``status``.

Nothing here stores or logs card data beyond brand, type, last 4 and authorization code.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import httpx
import msgspec

from caja_core.errors import ValidationFailed
from caja_core.money import MAX_AMOUNT, format_clp
from caja_core.payments.verification import ManualAttemptOut, ReportParse, ReportRow
from caja_core.providers import (
    Capability,
    CardData,
    ChargeRequest,
    Outcome,
    OutcomeKind,
    ProgressCallback,
    ProviderContext,
    WebhookNotice,
)
from caja_core.targets import check_target

from . import report

log = logging.getLogger("caja.klap")

#: Letters and digits that cannot be mistaken for one another when read aloud or off a screen
#: (no 0/O, 1/I/L, 2/Z, 5/S, 8/B).
REFERENCE_ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
REFERENCE_LENGTH = 6

AUTH_CODE_RE = re.compile(r"^[A-Z0-9]{6}$")
LAST4_RE = re.compile(r"^[0-9]{4}$")

#: KLAP order statuses (as returned by GET /orders/{id}) and what they mean for us.
PAID_STATUSES = {"completed", "paid", "approved", "success"}
FAILED_STATUSES = {"rejected", "failed", "cancelled", "canceled", "expired", "reversed", "nullified"}


def _t(title: str, description: str = "") -> msgspec.Meta:
    """A settings field's label and help in the admin's form (Spanish)."""
    return msgspec.Meta(title=title, description=description) if description else msgspec.Meta(title=title)


class KlapSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A register's KLAP settings. Fields ending in ``_key`` / ``_secret`` are secrets: forms never render
    them back and ``repr`` never shows them."""

    mode: Annotated[
        Literal["manual", "checkout"],
        _t("Modo", "manual: el cajero cobra en el celular y confirma; checkout: pago en línea por la API de KLAP."),
    ] = "manual"
    #: Credit sales below this amount are refused by KLAP (CLP 1 000).
    min_credit_amount: Annotated[int, _t("Monto mínimo con crédito (CLP)")] = 1000
    # -- checkout mode ---------------------------------------------------------------------------
    #: e.g. ``https://api.pasarela.multicaja.cl/payment-gateway/v1`` (``/orders`` is appended).
    api_base_url: Annotated[str, _t("URL de la API", "Solo modo checkout.")] = ""
    api_key: Annotated[str, _t("Clave de la API")] = ""
    #: How a webhook proves it comes from KLAP: ``hashed_api_key`` (the header carries
    #: sha256(reference_id + order_id + api_key), KLAP's scheme) or ``shared_secret`` (the header carries
    #: ``webhook_secret`` verbatim).
    webhook_auth: Annotated[
        Literal["hashed_api_key", "shared_secret"],
        _t("Autenticación del webhook", "hashed_api_key: el esquema de KLAP; shared_secret: un secreto fijo."),
    ] = "hashed_api_key"
    webhook_auth_header: Annotated[str, _t("Cabecera de autenticación")] = "apikey"
    webhook_secret: Annotated[str, _t("Secreto del webhook")] = ""
    #: Public URL of this server's ``/webhooks/klap`` (given to KLAP with each order).
    webhook_url: Annotated[str, _t("URL pública del webhook", "La dirección de /webhooks/klap de este servidor.")] = ""
    #: Where KLAP sends the customer after paying / cancelling (optional).
    return_url: Annotated[str, _t("URL de retorno")] = ""
    cancel_url: Annotated[str, _t("URL de cancelación")] = ""
    request_timeout_s: Annotated[float, _t("Espera de la API (s)")] = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_credit_amount <= MAX_AMOUNT:
            raise ValueError("el monto mínimo de crédito debe estar entre 0 y 50.000.000")
        if not 0.1 <= self.request_timeout_s <= 60:
            raise ValueError("el tiempo de espera de la API debe estar entre 0,1 y 60 segundos")
        if not re.fullmatch(r"[A-Za-z0-9-]{1,60}", self.webhook_auth_header):
            raise ValueError("el nombre del encabezado de autenticación del webhook es inválido")
        for name in ("api_base_url", "webhook_url", "return_url", "cancel_url"):
            value = getattr(self, name)
            if value and not re.fullmatch(r"https?://[^\s<>\"'|]+", value):
                raise ValueError(f"{name} debe ser una URL http(s) válida")
        if self.api_base_url:
            try:
                url = httpx.URL(self.api_base_url)
            except httpx.InvalidURL as exc:
                raise ValueError("api_base_url debe ser una URL http(s) válida") from exc
            check_target(url.host, url.port or (443 if url.scheme == "https" else 80))
        if self.mode == "checkout":
            missing = [n for n in ("api_base_url", "api_key", "webhook_url") if not getattr(self, n)]
            if self.webhook_auth == "shared_secret" and not self.webhook_secret:
                missing.append("webhook_secret")
            if missing:
                raise ValueError("el modo checkout requiere: " + ", ".join(missing))

    def __repr__(self) -> str:
        return (
            f"KlapSettings(mode={self.mode!r}, api_base_url={self.api_base_url!r}, "
            f"api_key={'***' if self.api_key else ''!r}, webhook_auth={self.webhook_auth!r}, "
            f"webhook_secret={'***' if self.webhook_secret else ''!r})"
        )

    __str__ = __repr__


def new_reference() -> str:
    """A short human reference for a manual attempt, shown big on the POS (e.g. ``K7RM3X``)."""
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))


def normalise_card_type(value: Any) -> str | None:
    text = str(value or "").strip().lower()
    if not text:
        return None
    if text in ("debit", "debito", "débito", "db", "d", "prepago", "prepaid"):
        return "debito" if text not in ("prepago", "prepaid") else "prepago"
    if text in ("credit", "credito", "crédito", "cr", "c"):
        return "credito"
    return text[:20]


def masked_last4(value: Any) -> str | None:
    """The last 4 digits of whatever KLAP sent, never more (a longer run of digits is cut, not kept)."""
    digits = re.sub(r"\D", "", str(value if value is not None else ""))
    return digits[-4:] if len(digits) >= 4 else None


def check_amount(amount: Any, minimum: int) -> int:
    """Amounts ≤ 0, non-integer, absurdly large or under ``minimum`` never reach KLAP."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValidationFailed("El monto debe ser un número entero de pesos.", code="amount.invalid", field="amount")
    if amount <= 0:
        raise ValidationFailed("El monto debe ser mayor que cero.", code="amount.invalid", field="amount")
    if amount > MAX_AMOUNT:
        raise ValidationFailed(
            f"El monto supera el máximo permitido ({format_clp(MAX_AMOUNT)}).", code="amount.too_large", field="amount"
        )
    if amount < minimum:
        raise ValidationFailed(
            f"KLAP no acepta montos menores a {format_clp(minimum)}.", code="amount.under_minimum", field="amount"
        )
    return amount


def webhook_signature(reference_id: str, order_id: str, api_key: str) -> str:
    """KLAP's webhook authentication value: hex sha256 of reference_id + order_id + api_key."""
    return hashlib.sha256(f"{reference_id}{order_id}{api_key}".encode()).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _amount_of(data: Mapping[str, Any]) -> int | None:
    raw = data.get("amount")
    if isinstance(raw, Mapping):
        raw = raw.get("total")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit() and len(raw.strip()) <= 18:
        return int(raw.strip())
    return None


class KlapProvider:
    id = "klap"
    name = "KLAP"
    Settings = KlapSettings
    #: Per register, ``capabilities_for(settings)`` says which of these apply (manual vs checkout).
    capabilities = frozenset({Capability.MANUAL, Capability.WEBHOOK, Capability.STATUS, Capability.SALES_REPORT})
    min_amount = 1
    #: What the verification page says about the report to upload.
    report_help = (
        "Exporte desde el portal KLAP las ventas de la noche en CSV (con la tarjeta enmascarada). Columnas "
        "necesarias: Fecha, Monto, Código de autorización, Últimos 4 dígitos; opcionales: Hora, Marca, Tipo, "
        "Estado, N° operación."
    )

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport

    # -- shape -------------------------------------------------------------------------------------
    def capabilities_for(self, settings: KlapSettings) -> frozenset[Capability]:
        if settings.mode == "checkout":
            return frozenset({Capability.WEBHOOK, Capability.STATUS})
        return frozenset({Capability.MANUAL})

    # -- end-of-night verification (Capability.SALES_REPORT) ------------------------------------------
    def parse_report(self, data: bytes) -> ReportParse:
        return report.parse_report(data)

    def report_matches(self, row: ReportRow, attempt: ManualAttemptOut) -> bool:
        return report.report_matches(row, attempt)

    def normalise_authorization_code(self, raw: str) -> str:
        return report.normalise_authorization_code(raw)

    def device_key(self, settings: KlapSettings, register_code: str) -> str:
        return f"klap:{settings.mode}:{register_code}"

    def _client(self, settings: KlapSettings) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=settings.api_base_url.rstrip("/"),
            transport=self._transport,
            timeout=settings.request_timeout_s,
            headers={"apikey": settings.api_key, "Accept": "application/json"},
        )

    # -- charge ------------------------------------------------------------------------------------
    async def charge(
        self, request: ChargeRequest, settings: KlapSettings, ctx: ProviderContext, progress: ProgressCallback
    ) -> Outcome:
        if settings.mode == "checkout":
            check_amount(request.amount, max(self.min_amount, settings.min_credit_amount))
            return await self._create_order(request, settings)
        check_amount(request.amount, self.min_amount)
        reference = request.reference if request.reference and _valid_reference(request.reference) else new_reference()
        return Outcome(
            kind=OutcomeKind.PENDING,
            code="manual",
            ticket=request.ticket,
            amount=request.amount,
            reference=reference,
            message=f"Cobre {format_clp(request.amount)} en el celular KLAP; referencia {reference}",
        )

    async def _create_order(self, request: ChargeRequest, settings: KlapSettings) -> Outcome:
        body: dict[str, Any] = {
            "reference_id": str(request.attempt_id),
            "description": (request.description or f"Venta {request.register_code} {request.ticket}")[:120],
            "amount": {"currency": "CLP", "total": request.amount},
            "methods": ["tarjetas"],
            "webhooks": {"webhook_confirm": settings.webhook_url, "webhook_reject": settings.webhook_url},
        }
        if settings.return_url or settings.cancel_url:
            body["urls"] = {
                "return_url": settings.return_url or settings.cancel_url,
                "cancel_url": settings.cancel_url or settings.return_url,
            }
        try:
            async with self._client(settings) as client:
                response = await client.post("/orders", json=body)
        except httpx.ConnectError as exc:
            log.warning("KLAP no responde al crear la orden del intento %s: %s", request.attempt_id, type(exc).__name__)
            return Outcome(
                kind=OutcomeKind.UNAVAILABLE,
                ticket=request.ticket,
                code="connect_error",
                message="No se pudo conectar con KLAP; no se creó la orden.",
            )
        except httpx.HTTPError as exc:
            # The request may have reached KLAP: an order may exist, but nobody has its payment link.
            log.warning(
                "Sin respuesta de KLAP al crear la orden del intento %s: %s", request.attempt_id, type(exc).__name__
            )
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                ticket=request.ticket,
                code="timeout",
                message="KLAP no respondió a tiempo al crear la orden.",
            )
        data = _json(response)
        if response.status_code in (200, 201) and data and data.get("order_id"):
            if str(data.get("reference_id", "")) != str(request.attempt_id):
                return Outcome(
                    kind=OutcomeKind.UNKNOWN,
                    ticket=request.ticket,
                    code="reference_mismatch",
                    reference=str(data["order_id"]),
                    message="KLAP respondió con otra referencia; se revisará la orden.",
                )
            redirect = str(data.get("redirect_url") or "")
            return Outcome(
                kind=OutcomeKind.PENDING,
                code="checkout",
                ticket=request.ticket,
                amount=request.amount,
                reference=str(data["order_id"]),
                message=f"Orden KLAP creada; pago en {redirect}"
                if redirect
                else "Orden KLAP creada; esperando el pago.",
            )
        if 400 <= response.status_code < 500:
            code = str((data or {}).get("code") or f"http_{response.status_code}")[:20]
            message = str((data or {}).get("message") or "KLAP rechazó la orden.")[:200]
            return Outcome(kind=OutcomeKind.DECLINED, ticket=request.ticket, code=code, message=message)
        return Outcome(
            kind=OutcomeKind.UNKNOWN,
            ticket=request.ticket,
            code=f"http_{response.status_code}",
            message="Respuesta inesperada de KLAP al crear la orden.",
        )

    # -- status / cancel / refund / health ---------------------------------------------------------
    async def status(self, request: ChargeRequest, settings: KlapSettings, ctx: ProviderContext) -> Outcome:
        """Checkout: ask KLAP about the order (``request.reference`` = KLAP's order id). Manual: only the
        cashier and the end-of-night report know; the answer stays PENDING."""
        if settings.mode != "checkout":
            return Outcome(
                kind=OutcomeKind.PENDING,
                code="manual",
                ticket=request.ticket,
                message="Cobro manual: lo confirma el cajero con el código de autorización.",
            )
        if not request.reference:
            return Outcome(
                kind=OutcomeKind.UNAVAILABLE,
                ticket=request.ticket,
                code="no_order",
                message="No hay orden KLAP para este intento: el cliente no pudo pagarla.",
            )
        try:
            async with self._client(settings) as client:
                response = await client.get(f"/orders/{request.reference}")
        except httpx.HTTPError as exc:
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                ticket=request.ticket,
                code="transport",
                message=f"No se pudo consultar la orden en KLAP ({type(exc).__name__}).",
            )
        if response.status_code == 404:
            return Outcome(
                kind=OutcomeKind.UNAVAILABLE,
                ticket=request.ticket,
                code="not_found",
                reference=request.reference,
                message="KLAP no conoce la orden.",
            )
        data = _json(response)
        if response.status_code != 200 or not data:
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                ticket=request.ticket,
                code=f"http_{response.status_code}",
                message="Respuesta inesperada de KLAP al consultar la orden.",
            )
        if str(data.get("reference_id", "")) != str(request.attempt_id):
            return Outcome(
                kind=OutcomeKind.UNKNOWN,
                ticket=request.ticket,
                code="reference_mismatch",
                reference=request.reference,
                message="La orden KLAP es de otra referencia.",
            )
        state = str(data.get("status", "")).lower()
        if state in PAID_STATUSES:
            return Outcome(
                kind=OutcomeKind.APPROVED,
                ticket=request.ticket,
                amount=_amount_of(data),
                reference=request.reference,
                card=_card_of(data),
                code="paid",
                message="Pagado en KLAP",
            )
        if state in FAILED_STATUSES:
            return Outcome(
                kind=OutcomeKind.DECLINED,
                ticket=request.ticket,
                reference=request.reference,
                code=str(data.get("code") or state)[:20],
                message=str(data.get("message") or f"Orden {state}")[:200],
            )
        return Outcome(
            kind=OutcomeKind.PENDING,
            ticket=request.ticket,
            reference=request.reference,
            code="checkout",
            message="La orden KLAP sigue pendiente de pago.",
        )

    async def cancel(self, request: ChargeRequest, settings: KlapSettings, ctx: ProviderContext) -> Outcome:
        # Neither the phone app nor KLAP Checkout can be cancelled from here: whether money was taken is
        # known only from the phone (manual) or the order's status (checkout).
        return Outcome(
            kind=OutcomeKind.UNKNOWN,
            ticket=request.ticket,
            code="unsupported",
            message="KLAP no permite cancelar desde la caja: revise el celular o la orden.",
        )

    async def refund(self, request: ChargeRequest, settings: KlapSettings, ctx: ProviderContext) -> Outcome:
        return Outcome(
            kind=OutcomeKind.DECLINED,
            ticket=request.ticket,
            code="unsupported",
            message="Las devoluciones KLAP se hacen en la app o el portal KLAP.",
        )

    async def health(self, settings: KlapSettings, ctx: ProviderContext) -> Outcome:
        if settings.mode != "checkout":
            return Outcome(kind=OutcomeKind.APPROVED, code="manual", message="Modo manual (celular KLAP)")
        try:
            async with self._client(settings) as client:
                response = await client.get("/merchant/methods")
        except httpx.HTTPError as exc:
            return Outcome(
                kind=OutcomeKind.UNAVAILABLE, code="transport", message=f"KLAP no responde ({type(exc).__name__})."
            )
        if response.status_code == 200:
            return Outcome(kind=OutcomeKind.APPROVED, message="ok")
        return Outcome(
            kind=OutcomeKind.UNAVAILABLE,
            code=f"http_{response.status_code}",
            message="KLAP rechazó la consulta (¿API key?)."
            if response.status_code in (401, 403)
            else "KLAP respondió con error.",
        )

    # -- webhooks ----------------------------------------------------------------------------------
    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookNotice:
        """A paid notice (order_id, reference_id, amount, brand, last_digits, card_type, quotas) becomes
        APPROVED; a rejected one (order_id, reference_id, code, message) becomes DECLINED."""
        data = _decode(body)
        order_id = str(data.get("order_id") or "").strip()
        reference = str(data.get("reference_id") or "").strip()
        if not order_id or not reference or len(order_id) > 80 or len(reference) > 80:
            raise ValidationFailed("Notificación KLAP sin order_id o reference_id válidos.", code="webhook.malformed")
        status = str(data.get("status") or "").lower()
        rejected = status in FAILED_STATUSES or (
            not status and "code" in data and "last_digits" not in data and "amount" not in data
        )
        if rejected:
            outcome = Outcome(
                kind=OutcomeKind.DECLINED,
                reference=order_id,
                code=str(data.get("code") or "rejected")[:20],
                message=str(data.get("message") or "Pago rechazado en KLAP")[:200],
                amount=_amount_of(data),
            )
        else:
            amount = _amount_of(data)
            if amount is None:
                raise ValidationFailed("Notificación de pago KLAP sin monto válido.", code="webhook.malformed")
            outcome = Outcome(
                kind=OutcomeKind.APPROVED,
                reference=order_id,
                amount=amount,
                code="paid",
                card=_card_of(data),
                message="Pagado en KLAP",
            )
        return WebhookNotice(external_id=order_id, reference=reference, outcome=outcome)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, settings: KlapSettings) -> bool:
        """Unsigned calls are rejected; comparisons are constant-time."""
        presented = _header(headers, settings.webhook_auth_header)
        if not presented:
            return False
        if settings.webhook_auth == "shared_secret":
            if not settings.webhook_secret:
                return False
            return hmac.compare_digest(presented.strip().encode(), settings.webhook_secret.encode())
        if not settings.api_key:
            return False
        try:
            data = _decode(body)
        except ValidationFailed:
            return False
        expected = webhook_signature(
            str(data.get("reference_id") or ""), str(data.get("order_id") or ""), settings.api_key
        )
        return hmac.compare_digest(presented.strip().lower().encode(), expected.encode())

    @staticmethod
    def masked_payload(body: bytes) -> dict[str, Any]:
        """What may be stored of a webhook body: known fields only, card number cut to the last 4."""
        try:
            data = _decode(body)
        except ValidationFailed:
            return {"malformed": True, "size": len(body)}
        keep = (
            "order_id",
            "reference_id",
            "amount",
            "brand",
            "card_type",
            "quotas",
            "quotas_number",
            "code",
            "message",
            "status",
            "mc_code",
            "payment_method",
        )
        out = {k: data[k] for k in keep if k in data and isinstance(data[k], (str, int, float, dict, type(None)))}
        if "last_digits" in data:
            out["last_digits"] = masked_last4(data["last_digits"])
        return out


def _valid_reference(value: str) -> bool:
    return len(value) == REFERENCE_LENGTH and all(c in REFERENCE_ALPHABET for c in value)


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _decode(body: bytes) -> dict[str, Any]:
    if len(body) > 64_000:
        raise ValidationFailed("Notificación KLAP demasiado grande.", code="webhook.malformed")
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ValidationFailed("Notificación KLAP con JSON inválido.", code="webhook.malformed") from exc
    if not isinstance(data, dict):
        raise ValidationFailed("Notificación KLAP con formato inesperado.", code="webhook.malformed")
    return data


def _card_of(data: Mapping[str, Any]) -> CardData:
    quotas = data.get("quotas", data.get("quotas_number"))
    auth = str(data.get("authorization_code") or data.get("mc_code") or "").strip().upper() or None
    brand = str(data.get("brand") or "").strip().upper()[:20] or None
    return CardData(
        brand=brand,
        card_type=normalise_card_type(data.get("card_type")),
        last4=masked_last4(data.get("last_digits")),
        authorization_code=auth[:20] if auth else None,
        installments=int(quotas)
        if isinstance(quotas, int) and not isinstance(quotas, bool)
        else (
            int(quotas)
            if isinstance(quotas, str) and quotas.isascii() and quotas.isdigit() and len(quotas) <= 3
            else None
        ),
    )


provider = KlapProvider()

"""A fake KLAP Checkout API on a real loopback socket, for tests and rehearsals.

It speaks plain HTTP/1.1 (one request per connection) and serves, under ``/payment-gateway/v1``:

* ``POST /orders`` — create an order (header ``apikey`` must match); answers order_id, reference_id,
  redirect_url.
* ``GET /orders/{order_id}`` — the order with its status (pending / completed / rejected) and, once paid,
  brand, last_digits, card_type, quotas, mc_code.
* ``GET /merchant/methods`` — the enabled payment methods (a health check).

Scripting: ``script(status, body)`` queues canned answers, ``delay_s`` delays every answer, ``hang``
never answers. ``pay(order_id)`` / ``reject(order_id)`` settle an order as a customer would and
``deliver_webhook(order_id)`` posts KLAP's notification (signed like KLAP: header ``apikey`` =
sha256(reference_id + order_id + api_key)) to the order's webhook URL.

Rehearsal: ``python -m caja_klap.fake_server --port 8089 --api-key demo``; pay an order with
``POST /fake/pay/{order_id}`` (or ``/fake/reject/{order_id}``), which also delivers the webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
from collections import deque
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from .provider import webhook_signature

PREFIX = "/payment-gateway/v1"
_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class FakeKlapServer:
    def __init__(self, *, api_key: str = "test-api-key", host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.orders: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.delay_s = 0.0
        self.hang = False
        self._scripted: deque[tuple[int, Any]] = deque()
        self._ids = itertools.count(1)
        self._server: asyncio.base_events.Server | None = None
        self._hanging: set[asyncio.Event] = set()
        self._deliveries: set[asyncio.Task] = set()

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for event in list(self._hanging):
            event.set()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base_url(self) -> str:
        return self.url + PREFIX

    # -- scripting -------------------------------------------------------------------------------
    def script(self, status: int, body: Any = None) -> None:
        """The next API request is answered with ``status`` and ``body`` (JSON) instead of normally."""
        self._scripted.append((status, body if body is not None else {}))

    def pay(
        self,
        order_id: str,
        *,
        brand: str = "VISA",
        last4: str = "4242",
        card_type: str = "DEBIT",
        quotas: int = 0,
        auth_code: str = "A1B2C3",
        amount: int | None = None,
    ) -> dict[str, Any]:
        order = self.orders[order_id]
        order.update(
            status="completed", brand=brand, last_digits=last4, card_type=card_type, quotas=quotas, mc_code=auth_code
        )
        payload = {
            "order_id": order_id,
            "reference_id": order["reference_id"],
            "amount": order["amount"] if amount is None else amount,
            "brand": brand,
            "last_digits": last4,
            "card_type": card_type,
            "quotas": quotas,
            "mc_code": auth_code,
        }
        order["webhook_payload"] = payload
        return payload

    def reject(self, order_id: str, *, code: str = "R01", message: str = "Pago rechazado") -> dict[str, Any]:
        order = self.orders[order_id]
        order.update(status="rejected", code=code, message=message)
        payload = {"order_id": order_id, "reference_id": order["reference_id"], "code": code, "message": message}
        order["webhook_payload"] = payload
        return payload

    def signed_headers(self, payload: dict[str, Any]) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "apikey": webhook_signature(str(payload["reference_id"]), str(payload["order_id"]), self.api_key),
        }

    async def deliver_webhook(
        self, order_id: str, url: str | None = None, *, headers: dict[str, str] | None = None, timeout_s: float = 10.0
    ) -> httpx.Response:
        """POST the order's notification (after ``pay``/``reject``) to ``url`` or the order's webhook URL."""
        order = self.orders[order_id]
        payload = order["webhook_payload"]
        target = url or (
            order["webhooks"].get("webhook_confirm")
            if order["status"] == "completed"
            else order["webhooks"].get("webhook_reject")
        )
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            return await client.post(
                target,
                content=json.dumps(payload).encode(),
                headers=headers if headers is not None else self.signed_headers(payload),
            )

    # -- HTTP ------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await reader.readline()
            if not request_line:
                return
            method, target, _ = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            body = await reader.readexactly(length) if length else b""
            path = urlsplit(target).path
            self.requests.append((method, path))
            if self.hang:
                event = asyncio.Event()
                self._hanging.add(event)
                await event.wait()
                return
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            status, payload = self._route(method, path, headers, body)
            data = json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if path.startswith("/fake/"):
            return self._rehearsal(method, path)
        if not path.startswith(PREFIX):
            return 404, {"code": "404", "message": "Ruta desconocida"}
        if self._scripted:
            return self._scripted.popleft()
        if headers.get("apikey") != self.api_key:
            return 403, {"code": "403", "message": "Error en apikey"}
        route = path[len(PREFIX) :]
        if method == "POST" and route == "/orders":
            return self._create_order(body)
        if method == "GET" and route.startswith("/orders/"):
            order = self.orders.get(route[len("/orders/") :])
            if order is None:
                return 404, {"code": "404", "message": "Orden no encontrada"}
            return 200, {k: v for k, v in order.items() if k not in ("webhook_payload", "webhooks")}
        if method == "GET" and route == "/merchant/methods":
            return 200, ["tarjetas"]
        return 404, {"code": "404", "message": "Ruta desconocida"}

    def _create_order(self, body: bytes) -> tuple[int, Any]:
        try:
            data = json.loads(body)
            reference = str(data["reference_id"])
            amount = data["amount"]["total"]
        except (ValueError, KeyError, TypeError):
            return 400, {"code": "400", "message": "Error en parámetros"}
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            return 400, {"code": "400", "message": "Monto inválido"}
        order_id = f"KLAP-{next(self._ids):06d}"
        self.orders[order_id] = {
            "order_id": order_id,
            "reference_id": reference,
            "amount": amount,
            "status": "pending",
            "webhooks": dict(data.get("webhooks") or {}),
        }
        return 200, {"order_id": order_id, "reference_id": reference, "redirect_url": f"{self.url}/pay/{order_id}"}

    def _rehearsal(self, method: str, path: str) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if method != "POST" or len(parts) != 3 or parts[2] not in self.orders:
            return 404, {"code": "404", "message": "Orden no encontrada"}
        order_id = parts[2]
        payload = self.pay(order_id) if parts[1] == "pay" else self.reject(order_id)
        task = asyncio.get_running_loop().create_task(self.deliver_webhook(order_id))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return 200, payload


async def _serve(port: int, api_key: str) -> None:
    server = await FakeKlapServer(api_key=api_key, port=port).start()
    print(f"KLAP falso escuchando en {server.api_base_url} (apikey {api_key!r})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Servidor KLAP falso para pruebas y ensayos.")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--api-key", default="demo")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.api_key))


if __name__ == "__main__":
    main()

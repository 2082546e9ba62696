"""Steady POS traffic for the restart drill: each cashier logs in with her PIN, opens a session on her
register and sells in cash, sale after sale (add a product, check out, pay in cash, next sale, reload the sale
screen and a static file), until the stop file appears. Every answer must be the expected one: a 5xx, a
connection error or any other surprise is a failed request.

    python traffic.py URL CA_FILE PLAN_JSON STOP_FILE RESULT_JSON [PROGRESS_JSON]

PLAN_JSON: {"venue_id": 1, "cashiers": [{"user_id": 3, "pin": "1111", "register_id": 4, "product_id": 1}]}
RESULT_JSON gets {"requests": n, "sales": [ids], "failures": [...], "by_status": {...}}; PROGRESS_JSON gets the
same after every sale, for the drill to wait on.
"""

import json
import re
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

url, ca_file, plan_path, stop_path, result_path = sys.argv[1:6]
progress_path = Path(sys.argv[6]) if len(sys.argv) > 6 else None
plan = json.loads(Path(plan_path).read_text())
stop = Path(stop_path)
lock = threading.Lock()
result: dict = {"requests": 0, "sales": [], "failures": [], "by_status": {}}


def call(client: httpx.Client, method: str, path: str, expected: tuple[int, ...], data=None) -> httpx.Response | None:
    headers = {"x-csrftoken": client.cookies.get("caja_csrf", "")} if method == "POST" else {}
    started = time.monotonic()
    try:
        r = client.request(method, path, data=data, headers=headers)
    except httpx.HTTPError as exc:
        with lock:
            result["requests"] += 1
            result["failures"].append({"path": path, "error": f"{type(exc).__name__}: {exc}", "at": started})
        return None
    with lock:
        result["requests"] += 1
        result["by_status"][str(r.status_code)] = result["by_status"].get(str(r.status_code), 0) + 1
        if r.status_code not in expected:
            result["failures"].append({"path": path, "status": r.status_code, "body": r.text[:300], "at": started})
            return None
    return r


def cashier(spec: dict) -> None:
    with httpx.Client(base_url=url, verify=ca_file, timeout=30) as client:
        if not call(client, "GET", "/login", (200,)):
            return
        pin = {"venue_id": plan["venue_id"], "user_id": spec["user_id"], "pin": spec["pin"]}
        if not call(client, "POST", "/login/pin", (303,), pin):
            return
        register = spec["register_id"]
        if not call(client, "GET", f"/caja/session/open?register_id={register}", (200,)):
            return
        opening = {"register_id": register, "initial_cash": "20000", "open_key": str(uuid.uuid4())}
        if not call(client, "POST", "/caja/session/open", (303,), opening):
            return
        while not stop.exists():
            if not call(client, "POST", "/caja/venta/item", (200,), {"product_id": spec["product_id"], "quantity": 1}):
                return
            checkout = call(client, "POST", "/caja/venta/cobrar", (200,))
            if checkout is None:
                return
            match = re.search(r"/caja/venta/(\d+)/efectivo", checkout.text)
            if not match:
                with lock:
                    result["failures"].append({"path": "/caja/venta/cobrar", "error": "sin botón de efectivo"})
                return
            sale_id = int(match.group(1))
            if not call(client, "POST", f"/caja/venta/{sale_id}/efectivo", (200,), {"cash_received": ""}):
                return
            with lock:
                result["sales"].append(sale_id)
                if progress_path is not None:
                    progress_path.with_suffix(".tmp").write_text(json.dumps(result))
                    progress_path.with_suffix(".tmp").replace(progress_path)
            if not call(client, "POST", "/caja/venta/siguiente", (303,)):
                return
            if not call(client, "GET", "/caja/venta", (200,)):
                return
            if not call(client, "GET", "/static/css/caja.css", (200,)):
                return


threads = [threading.Thread(target=cashier, args=(spec,)) for spec in plan["cashiers"]]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
Path(result_path).write_text(json.dumps(result, indent=2))

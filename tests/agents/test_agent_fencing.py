"""Fenced agent commands at the API: the claim, commands that were never started, revocation, and results
that arrive after the server stopped waiting (applied to the payment however late)."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import pytest
from sqlalchemy import select

from caja_core.agents.service import AgentNoAnswer, AgentNotReached, revoke_attempt_commands
from caja_core.payments.models import AgentCommand, PaymentAttempt
from caja_core.sales import service as sales
from caja_core.sales.models import Sale
from caja_core.sessions import service as sessions

from .conftest import bearer
from .test_agent_api import channel, command_row, take

_tickets = itertools.count(900)


def sale_command(ticket: str, amount: int) -> dict:
    return {
        "Command": 100,
        "Amount": amount,
        "TicketNumber": ticket,
        "PrintOnPos": True,
        "SaleType": 0,
        "SendMessage": True,
        "EmployeeId": 0,
        "DateTime": "2026-01-01T23:00:00",
    }


async def make_attempt(db, venue, amount: int) -> tuple[int, int, str]:
    """A card sale waiting on CAJA1's terminal: (sale id, attempt id, ticket), as the orchestrator leaves it
    while the Sale command is out."""
    ticket = f"F{next(_tickets)}"
    async with db.session() as s:
        session = await sessions.open_session(
            s,
            venue_id=venue.venue_id,
            register_id=venue.register_id,
            user_id=venue.setup.cashier_id,
            initial_cash=0,
            open_key="apertura-cercado",
        )
        sale = await sales.create_sale(
            s,
            venue_id=venue.venue_id,
            session_id=session.id,
            cashier_id=venue.setup.cashier_id,
            idempotency_key=uuid.uuid4().hex,
            items=[sales.ItemInput(name="Consumo", unit_price=amount, quantity=1, free_reason="barra")],
        )
        attempt = PaymentAttempt(
            venue_id=venue.venue_id,
            sale_id=sale.id,
            session_id=session.id,
            register_id=venue.register_id,
            provider_id="getnet",
            device_key="getnet:agent:CAJA1",
            role="primary",
            amount=amount,
            ticket=ticket,
            state="sending",
            active=True,
        )
        s.add(attempt)
        await s.flush()
        return sale.id, attempt.id, ticket


async def take_sale(api, token) -> dict:
    """The next Sale command for the agent. The app's own reconciliation may queue queries for the hand-made
    attempts of these tests (nobody answers them here: they expire, harmlessly)."""
    deadline = time.monotonic() + 15
    while True:
        command = await take(api, token)
        if command is not None and command["payload"].get("Command") == 100:
            return command
        assert time.monotonic() < deadline, "no llegó el comando de venta"


async def claim(api, venue, command, fence=None):
    return await api.post(
        f"/api/agent/v1/commands/{command['command_id']}/claim",
        json={"fence": command["fence"] if fence is None else fence},
        headers=bearer(venue.token),
    )


async def test_only_the_latest_delivery_can_claim_and_a_claimed_command_is_never_handed_out_again(
    live, venue, sqlite_db
):
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange({"Command": 101}, deadline_s=8))
    first = await take(live, venue.token)
    again = await take(live, venue.token, wait=3)  # the first answer was "lost": handed out again
    assert again["fence"] == first["fence"] + 1 and 0 < again["expires_in_s"] <= first["expires_in_s"] <= 4
    r = await claim(live, venue, first)
    assert r.status_code == 409 and r.json()["code"] == "agent.claim_stale"
    r = await claim(live, venue, again)
    assert r.status_code == 200 and r.json() == {"status": "claimed"}
    r = await claim(live, venue, again)  # the agent did not get our answer and asks again
    assert r.status_code == 200
    assert await take(live, venue.token, wait=1.5) is None  # started: never handed out again
    row = await command_row(sqlite_db, again["command_id"])
    assert row.status == "claimed" and row.claimed_at is not None
    await live.post(
        f"/api/agent/v1/commands/{again['command_id']}/result",
        json={"result": {"ResponseCode": 0}},
        headers=bearer(venue.token),
    )
    assert await asyncio.wait_for(exchange, 5) == {"ResponseCode": 0}
    r = await claim(live, venue, again)
    assert r.status_code == 409 and r.json()["code"] == "agent.claim_taken"


async def test_a_delivered_command_not_started_in_time_is_not_sent_and_can_never_start(live, venue, sqlite_db):
    started = time.monotonic()
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange(sale_command("NS1", 1000), deadline_s=8))
    command = await take(live, venue.token)  # delivered, but the agent never claims it
    with pytest.raises(AgentNotReached) as info:
        await asyncio.wait_for(exchange, 10)
    assert info.value.not_sent is True and "no lo inició" in str(info.value)
    assert time.monotonic() - started < 7  # its start window (4 s here), not the sale's deadline
    r = await claim(live, venue, command)
    assert r.status_code == 409 and r.json()["code"] == "agent.claim_expired"
    row = await command_row(sqlite_db, command["command_id"])
    assert row.status == "expired" and row.claimed_at is None
    assert await take(live, venue.token, wait=0) is None


async def test_an_answer_for_a_command_that_was_never_started_pays_nothing(live, venue, sqlite_db):
    """The command expired unclaimed, so the terminal never saw it and the sale was told "not charged". A Sale
    answer posted for it later (a replayed or forged result, an agent that skipped the claim) contradicts the
    fence: it is refused and the payment stays not charged."""
    sale_id, attempt_id, ticket = await make_attempt(sqlite_db, venue, 4100)
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange(sale_command(ticket, 4100), deadline_s=8))
    command = await take_sale(live, venue.token)  # delivered, never claimed
    with pytest.raises(AgentNotReached):
        await asyncio.wait_for(exchange, 10)
    approval = {
        "FunctionCode": 100,
        "ResponseCode": 0,
        "Ticket": ticket,
        "Amount": 4100,
        "AuthorizationCode": "777777",
        "OperationId": 77,
        "RealDate": "2026-01-01T23:00:05",
    }
    url = f"/api/agent/v1/commands/{command['command_id']}/result"
    r = await live.post(url, json={"result": approval}, headers=bearer(venue.token))
    assert r.status_code == 409 and r.json()["code"] == "agent.result_not_started", r.text
    assert "nunca se inició" in r.json()["error"]
    async with sqlite_db.reader() as s:
        attempt = await s.get(PaymentAttempt, attempt_id)
        assert attempt.state != "approved" and attempt.authorization_code is None
        assert (await s.get(Sale, sale_id)).status == "pending_payment"
    row = await command_row(sqlite_db, command["command_id"])
    assert row.result is None and row.status == "expired"
    # The agent's own word that it did not run it is still taken (it proves nothing more).
    r = await live.post(url, json={"result": {"AgentError": "refused"}}, headers=bearer(venue.token))
    assert r.status_code == 200 and r.json() == {"status": "late"}


async def test_a_wait_given_up_revokes_the_command_it_had_delivered(live, venue, sqlite_db):
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange(sale_command("RV1", 1000), deadline_s=8))
    command = await take(live, venue.token)
    exchange.cancel()  # the cashier cancelled / the max wait passed
    with pytest.raises(asyncio.CancelledError):
        await exchange
    r = await claim(live, venue, command)
    assert r.status_code == 409 and r.json()["code"] == "agent.claim_revoked"
    assert (await command_row(sqlite_db, command["command_id"])).status == "revoked"


async def test_claim_of_an_unknown_or_foreign_command_and_bad_fences(live, venue, sqlite_db):
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange({"Command": 101}, deadline_s=4))
    command = await take(live, venue.token)
    url = f"/api/agent/v1/commands/{command['command_id']}/claim"
    r = await live.post(url, json={"fence": command["fence"]}, headers=bearer(venue.other_token))
    assert r.status_code == 404
    for body in ({}, {"fence": "uno"}, {"fence": -1}, {"fence": 2**40}):
        r = await live.post(url, json=body, headers=bearer(venue.token))
        assert r.status_code == 400 and "fence" in r.json()["error"], (body, r.text)
    r = await live.post("/api/agent/v1/commands/999999/claim", json={"fence": 1}, headers=bearer(venue.token))
    assert r.status_code == 404
    assert (await command_row(sqlite_db, command["command_id"])).status == "delivered"  # nothing half-written
    exchange.cancel()


async def test_revoke_attempt_commands_says_whether_a_started_run_is_unaccounted_for(live, venue, sqlite_db):
    _, attempt_id, ticket = await make_attempt(sqlite_db, venue, 2500)
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange(sale_command(ticket, 2500), deadline_s=8))
    command = await take_sale(live, venue.token)
    assert command["attempt_id"] == attempt_id
    r = await claim(live, venue, command)
    assert r.status_code == 200
    async with sqlite_db.session() as s:
        assert await revoke_attempt_commands(s, attempt_id) is False  # running on the terminal, no result yet
    assert (await command_row(sqlite_db, command["command_id"])).status == "claimed"  # a start is not undone
    await live.post(
        f"/api/agent/v1/commands/{command['command_id']}/result",
        json={"result": {"AgentError": "no_receipt", "Detail": "sin acuse"}},
        headers=bearer(venue.token),
    )
    await asyncio.wait_for(exchange, 5)
    async with sqlite_db.session() as s:
        assert await revoke_attempt_commands(s, attempt_id) is True  # its run is accounted for

    # A second Sale command for the same attempt, delivered but not started: revoked, and True.
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange(sale_command(ticket, 2500), deadline_s=8))
    second = await take_sale(live, venue.token)
    async with sqlite_db.session() as s:
        assert await revoke_attempt_commands(s, attempt_id) is True
    r = await claim(live, venue, second)
    assert r.status_code == 409 and r.json()["code"] == "agent.claim_revoked"
    with pytest.raises(AgentNotReached):
        await asyncio.wait_for(exchange, 5)  # the waiting side sees the revocation: never sent


async def test_a_result_after_the_server_gave_up_is_applied_to_the_payment(live, venue, sqlite_db):
    """The agent started the sale, the server stopped waiting (in doubt), the approval comes later: the sale is
    paid with the terminal's data, once, however late."""
    sale_id, attempt_id, ticket = await make_attempt(sqlite_db, venue, 3300)
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange(sale_command(ticket, 3300), deadline_s=2))
    command = await take_sale(live, venue.token)
    assert (await claim(live, venue, command)).status_code == 200
    with pytest.raises(AgentNoAnswer):
        await asyncio.wait_for(exchange, 10)
    assert (await command_row(sqlite_db, command["command_id"])).status == "expired"
    approval = {
        "FunctionCode": 100,
        "ResponseCode": 0,
        "ResponseMessage": "Aprobado",
        "Ticket": ticket,
        "Amount": 3300,
        "AuthorizationCode": "654321",
        "Last4Digits": "0119",
        "OperationId": 17,
        "CardType": "DB",
        "CardBrand": "VI",
        "RealDate": "2026-01-01T23:00:05",
    }
    url = f"/api/agent/v1/commands/{command['command_id']}/result"
    r = await live.post(url, json={"result": approval}, headers=bearer(venue.token))
    assert r.status_code == 200 and r.json() == {"status": "late"}
    async with sqlite_db.reader() as s:
        attempt = await s.get(PaymentAttempt, attempt_id)
        sale = await s.get(Sale, sale_id)
        row = (await s.execute(select(AgentCommand).where(AgentCommand.id == command["command_id"]))).scalar_one()
    assert attempt.state == "approved" and attempt.authorization_code == "654321" and attempt.last4 == "0119"
    assert sale.status == "paid"
    assert row.applied_at is not None
    applied_at = row.applied_at
    r = await live.post(url, json={"result": approval}, headers=bearer(venue.token))  # posted again
    assert r.status_code == 200 and r.json() == {"status": "duplicate"}
    assert (await command_row(sqlite_db, command["command_id"])).applied_at == applied_at  # applied once


async def test_a_late_answer_for_another_ticket_pays_nothing(live, venue, sqlite_db):
    sale_id, attempt_id, ticket = await make_attempt(sqlite_db, venue, 1200)
    exchange = asyncio.create_task(channel(sqlite_db, venue).exchange(sale_command(ticket, 1200), deadline_s=2))
    command = await take_sale(live, venue.token)
    assert (await claim(live, venue, command)).status_code == 200
    with pytest.raises(AgentNoAnswer):
        await asyncio.wait_for(exchange, 10)
    foreign = {"FunctionCode": 100, "ResponseCode": 0, "Ticket": "OTRO", "Amount": 1200, "AuthorizationCode": "1"}
    r = await live.post(
        f"/api/agent/v1/commands/{command['command_id']}/result", json={"result": foreign}, headers=bearer(venue.token)
    )
    assert r.status_code == 200 and r.json() == {"status": "late"}
    async with sqlite_db.reader() as s:
        attempt = await s.get(PaymentAttempt, attempt_id)
        assert attempt.state != "approved" and attempt.authorization_code is None
        assert (await s.get(Sale, sale_id)).status == "pending_payment"

"""Sales taken while the POS could not reach the server: received once whatever is resent (also concurrently),
priced from the catalogue as it was at the sale, within the register's offline rule; rejected ones kept with
their reason for a supervisor; accepted ones in the session's totals and expected cash; the close waits for the
devices' queues; an offline period is an incident on the session."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import msgspec
import pytest
from sqlalchemy import select

from caja_core.audit import service as audit
from caja_core.audit.models import AuditEvent
from caja_core.catalog import service as catalog
from caja_core.clock import utcnow
from caja_core.errors import Conflict, ValidationFailed
from caja_core.offline import service as offline
from caja_core.payments.models import PaymentAttempt
from caja_core.permissions import Action
from caja_core.permissions import service as permissions
from caja_core.permissions.service import SupervisorRequired
from caja_core.registers import service as registers
from caja_core.reports import service as reports
from caja_core.sales import service as sales
from caja_core.sessions import service as sessions
from caja_core.testing.factories import SUPERVISOR_PIN, make_registry

from .conftest import open_session

DEVICE = "equipo-a"


def local(minutes_ago: float = 1.0) -> str:
    """An instant as a device in Santiago writes it (ISO 8601 with its offset)."""
    from zoneinfo import ZoneInfo

    return (utcnow() - timedelta(minutes=minutes_ago)).astimezone(ZoneInfo("America/Santiago")).isoformat()


def cash_sale(st, session_id, *, product="Cerveza", quantity=1, price=None, received=None, key=None, when=None):
    price = st.prices[product] if price is None else price
    return offline.OfflineSaleIn(
        key=key or offline.new_key(),
        register_id=st.register_id,
        session_id=session_id,
        cashier_id=st.cashier_id,
        local_time=when or local(),
        method="cash",
        lines=[offline.OfflineLine(product_id=st.products[product], quantity=quantity, unit_price=price)],
        total=price * quantity,
        cash_received=received,
    )


def phone_sale(st, session_id, *, product="Piscola", code="A1B2C3", key=None):
    sale = cash_sale(st, session_id, product=product, key=key)
    return msgspec.structs.replace(
        sale,
        method="backup",
        backup=offline.BackupReference(authorization_code=code, last4="4242", brand="Visa", card_type="débito"),
    )


async def sync(db, st, items, *, device=DEVICE, user_id=None, period=None):
    return await offline.sync_sales(
        db, venue_id=st.venue_id, user_id=user_id or st.cashier_id, device_id=device, sales=items, period=period
    )


async def session_of(db, st, session_id):
    async with db.session() as s:
        return await sessions.get_session(s, st.venue_id, session_id)


async def paid_sales(db, st, session_id):
    async with db.session() as s:
        return [x for x in await sales.list_sales(s, st.venue_id, session_id=session_id) if x.status == "paid"]


async def test_five_cash_and_one_phone_sale_count_once_in_the_session_and_its_expected_cash(any_db, setup):
    session = await open_session(any_db, setup, initial_cash=10000)
    queue = [cash_sale(setup, session.id, product="Cerveza", quantity=2, received=10000) for _ in range(5)]
    queue.append(phone_sale(setup, session.id))
    results = await sync(any_db, setup, queue)
    assert [r.status for r in results] == ["accepted"] * 6
    assert [r.total for r in results] == [7000] * 5 + [6000]
    again = await sync(any_db, setup, queue)  # the device did not hear the answer and sends the queue again
    assert [(r.status, r.sale_id) for r in again] == [(r.status, r.sale_id) for r in results]

    paid = await paid_sales(any_db, setup, session.id)
    assert len(paid) == 6
    cash = [x for x in paid if x.payment_method == "cash"]
    assert len(cash) == 5 and {x.change_given for x in cash} == {3000}
    phone = next(x for x in paid if x.paid_via == "backup")
    assert phone.provider_id == "fakebackup" and phone.total == 6000
    current = await session_of(any_db, setup, session.id)
    assert current.ticket_count == 6 and current.sales_total == 41000
    assert current.cash_sales_total == 35000 and current.card_sales_total == 6000 and current.backup_count == 1
    async with any_db.session() as s:
        assert sessions.expected_cash(await s.get(sessions.CashSession, session.id)) == 45000
        attempt = await s.scalar(select(PaymentAttempt).where(PaymentAttempt.sale_id == phone.id))
        assert attempt.state == "approved_manual" and attempt.authorization_code == "A1B2C3"
        # Stored as an online backup confirmation stores it (the end-of-night verification compares the two).
    assert attempt.last4 == "4242" and attempt.card_type == "debito"


async def test_concurrent_duplicate_submissions_make_one_sale_per_key(any_db, setup):
    session = await open_session(any_db, setup)
    queue = [cash_sale(setup, session.id) for _ in range(4)] + [phone_sale(setup, session.id)]
    answers = await asyncio.gather(*(sync(any_db, setup, queue) for _ in range(5)))
    first = [(r.key, r.status, r.sale_id) for r in answers[0]]
    assert all([(r.key, r.status, r.sale_id) for r in other] == first for other in answers)
    assert {status for _, status, _ in first} == {"accepted"}
    assert len(await paid_sales(any_db, setup, session.id)) == 5
    current = await session_of(any_db, setup, session.id)
    assert current.ticket_count == 5 and current.sales_total == 4 * 3500 + 6000


async def test_a_tampered_price_is_rejected_with_its_reason_and_kept_for_a_supervisor(any_db, setup):
    session = await open_session(any_db, setup)
    good = cash_sale(setup, session.id)
    cheap = cash_sale(setup, session.id, product="Piscola", price=100)
    results = await sync(any_db, setup, [good, cheap])
    assert [r.status for r in results] == ["accepted", "rejected"]
    assert "precio de Piscola" in results[1].reason and "$6.000" in results[1].reason
    assert results[1].sale_id is None
    assert (await session_of(any_db, setup, session.id)).sales_total == 3500  # nothing of it counts
    again = await sync(any_db, setup, [cheap])
    assert again[0].status == "rejected" and again[0].reason == results[1].reason
    async with any_db.session() as s:
        kept = await offline.list_offline_sales(s, setup.venue_id, status="rejected")
        assert [k.key for k in kept] == [cheap.key] and kept[0].claimed_total == 100
        incidents = await audit.list_incidents(s, setup.venue_id, session_id=session.id)
        incident = next(i for i in incidents if i.kind == "offline_sale_rejected")
        assert "precio de Piscola" in incident.description
        await audit.resolve_incident(
            s, venue_id=setup.venue_id, incident_id=incident.id, user_id=setup.supervisor_id, resolution="Cobrado"
        )
    assert (await sync(any_db, setup, [cheap]))[0].status == "resolved"


async def test_a_wrong_total_is_rejected(any_db, setup):
    session = await open_session(any_db, setup)
    sale = msgspec.structs.replace(cash_sale(setup, session.id, quantity=2), total=3500)
    [result] = await sync(any_db, setup, [sale])
    assert result.status == "rejected" and "no es la suma" in result.reason


async def test_the_price_is_the_catalogue_price_at_the_time_of_the_sale(any_db, setup):
    session = await open_session(any_db, setup)
    before = local(minutes_ago=2)
    async with any_db.session() as s:
        await catalog.update_product(s, venue_id=setup.venue_id, product_id=setup.products["Cerveza"], price=4000)
    old_price = cash_sale(setup, session.id, when=before)  # sold at $3.500 before the change
    new_price = cash_sale(setup, session.id, price=4000, when=local(minutes_ago=0))
    stale = cash_sale(setup, session.id, when=local(minutes_ago=0))  # $3.500 after the change
    results = await sync(any_db, setup, [old_price, new_price, stale])
    assert [r.status for r in results] == ["accepted", "accepted", "rejected"]
    assert [r.total for r in results[:2]] == [3500, 4000]


async def test_the_registers_offline_rule_decides_the_phone_and_the_references_are_required(
    any_db, setup, fake_provider
):
    session = await open_session(any_db, setup)
    no_reference = msgspec.structs.replace(phone_sale(setup, session.id), backup=None)
    bad_code = phone_sale(setup, session.id, code="12")
    results = await sync(any_db, setup, [no_reference, bad_code])
    assert [r.status for r in results] == ["rejected", "rejected"]
    assert "referencia" in results[0].reason and "código de autorización" in results[1].reason

    await set_offline_methods(any_db, setup, ["cash"])
    # A sale that names no version of the rule (a device that kept the data before versions) gets the current one.
    [phone, cash] = await sync(any_db, setup, [phone_sale(setup, session.id), cash_sale(setup, session.id)])
    assert phone.status == "rejected" and "no permite el celular de respaldo" in phone.reason
    assert cash.status == "accepted"


async def set_offline_methods(db, st, methods):
    """The admin edits the register's fallback policy: what may be charged without the server."""
    async with db.session() as s:
        register = await registers.get_register(s, st.venue_id, st.register_id)
        data = msgspec.convert(
            {
                **msgspec.to_builtins(register),
                "policy": msgspec.to_builtins(msgspec.structs.replace(register.policy, offline_methods=methods)),
            },
            registers.RegisterInput,
            strict=False,
        )
        await registers.update_register(
            s,
            venue_id=st.venue_id,
            register_id=st.register_id,
            data=data,
            registry=make_registry(),
            actor_id=st.admin_id,
        )


async def given_rule(db, st):
    """The version of the register's offline rule a device is given with the register's data."""
    async with db.session() as s:
        return await offline.give_rule(s, st.venue_id, st.register_id)


def under(sale, rule):
    return msgspec.structs.replace(sale, rule_id=rule.id)


async def test_a_rule_tightened_while_a_device_is_offline_does_not_reject_its_honest_sales(any_db, setup):
    session = await open_session(any_db, setup)
    before = await given_rule(any_db, setup)
    assert before.methods == ["cash", "backup"] and before.backup_provider == "fakebackup"
    assert (await given_rule(any_db, setup)).id == before.id  # the same rule is the same version
    # The device lost the server with that rule and sold with the backup phone; meanwhile the admin tightened it.
    honest = under(phone_sale(setup, session.id), before)
    await set_offline_methods(any_db, setup, ["cash"])
    after = await given_rule(any_db, setup)
    assert after.id != before.id and after.methods == ["cash"] and after.backup_provider == ""
    # A device that was given the new rule sells under it; one that names it for the phone is refused.
    tight = under(phone_sale(setup, session.id, code="Z9Y8X7"), after)
    results = await sync(any_db, setup, [honest, tight])
    assert [r.status for r in results] == ["accepted", "rejected"]
    assert "no permite el celular de respaldo" in results[1].reason
    async with any_db.session() as s:
        kept = {k.key: k for k in await offline.list_offline_sales(s, setup.venue_id)}
        attempt = await s.scalar(select(PaymentAttempt).where(PaymentAttempt.sale_id == results[0].sale_id))
    assert attempt.provider_id == "fakebackup" and attempt.authorization_code == "A1B2C3"
    assert (await session_of(any_db, setup, session.id)).backup_count == 1
    assert kept[honest.key].status == "accepted"


async def test_a_loosened_rule_does_not_make_valid_what_a_device_took_outside_its_own(any_db, setup):
    await set_offline_methods(any_db, setup, ["cash"])
    session = await open_session(any_db, setup)
    cash_only = await given_rule(any_db, setup)
    # The device's screen never offers the phone under a cash-only rule: a phone sale under it is not honest.
    phone = under(phone_sale(setup, session.id), cash_only)
    cash = under(cash_sale(setup, session.id), cash_only)
    await set_offline_methods(any_db, setup, ["cash", "backup"])  # loosened before the device syncs
    results = await sync(any_db, setup, [phone, cash])
    assert [r.status for r in results] == ["rejected", "accepted"]
    assert "La regla sin conexión que tenía el equipo no permite el celular de respaldo" in results[0].reason
    assert (await session_of(any_db, setup, session.id)).backup_count == 0


async def test_a_device_cannot_invent_a_rule(any_db, setup):
    loose = await given_rule(any_db, setup)
    await set_offline_methods(any_db, setup, ["cash"])  # the loose version ends before the session opens
    session = await open_session(any_db, setup)
    invented = msgspec.structs.replace(phone_sale(setup, session.id), rule_id=loose.id + 1000)
    stale = under(phone_sale(setup, session.id, code="Q1W2E3"), loose)
    omitted = phone_sale(setup, session.id, code="R4T5Y6")  # names no version: the rule at the sale and now
    results = await sync(any_db, setup, [invented, stale, omitted])
    assert [r.status for r in results] == ["rejected", "rejected", "rejected"]
    assert all("no es una que esta caja haya tenido" in r.reason for r in results[:2])
    assert "no permite el celular de respaldo" in results[2].reason
    assert await paid_sales(any_db, setup, session.id) == []


async def test_a_sale_outside_its_session_or_of_another_cashier_is_not_taken(any_db, setup):
    session = await open_session(any_db, setup)
    old = cash_sale(setup, session.id, when=local(minutes_ago=24 * 60))
    bad_time = msgspec.structs.replace(cash_sale(setup, session.id), local_time="ayer a las 3")
    foreign = msgspec.structs.replace(cash_sale(setup, session.id), cashier_id=setup.supervisor_id)
    results = await sync(any_db, setup, [old, bad_time, foreign])
    assert [r.status for r in results] == ["rejected", "rejected", "not_yours"]
    assert "fuera de la sesión" in results[0].reason and "no es válida" in results[1].reason
    async with any_db.session() as s:  # the other cashier's sale was not recorded: it can still be synced
        assert foreign.key not in {k.key for k in await offline.list_offline_sales(s, setup.venue_id)}


async def test_bad_batches_are_refused_whole(any_db, setup):
    session = await open_session(any_db, setup)
    sale = cash_sale(setup, session.id)
    with pytest.raises(ValidationFailed):
        await sync(any_db, setup, [sale, sale])  # one key twice
    with pytest.raises(ValidationFailed):
        await sync(any_db, setup, [sale], device="")
    with pytest.raises(ValidationFailed):
        await sync(any_db, setup, [cash_sale(setup, session.id) for _ in range(offline.MAX_BATCH + 1)])
    assert await paid_sales(any_db, setup, session.id) == []


async def test_the_close_waits_for_the_devices_that_report_unsynced_sales(any_db, setup):
    session = await open_session(any_db, setup, initial_cash=0)
    for device, count in (("equipo-a", 2), ("equipo-b", 1)):
        async with any_db.session() as s:
            await offline.report_queue(
                s,
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                device_id=device,
                unsynced=count,
                user_id=setup.cashier_id,
            )
    with pytest.raises(Conflict) as refused:
        async with any_db.session() as s:
            await sessions.close_session(
                s, venue_id=setup.venue_id, session_id=session.id, user_id=setup.cashier_id, counted={}
            )
    assert refused.value.code == "session.unsynced_offline_sales" and "3 ventas" in refused.value.message
    await sync(any_db, setup, [cash_sale(setup, session.id)], device="equipo-a")
    for device in ("equipo-a", "equipo-b"):
        async with any_db.session() as s:
            await offline.report_queue(
                s,
                venue_id=setup.venue_id,
                register_id=setup.register_id,
                device_id=device,
                unsynced=0,
                user_id=setup.cashier_id,
            )
    async with any_db.session() as s:
        result = await sessions.close_session(
            s, venue_id=setup.venue_id, session_id=session.id, user_id=setup.cashier_id, counted={"1000": 3, "500": 1}
        )
    assert result.expected_cash == 3500 and result.difference == 0


async def test_an_offline_period_is_an_incident_on_the_session_once(any_db, setup):
    session = await open_session(any_db, setup)
    started, ended = local(minutes_ago=6), local(minutes_ago=1)
    queue = [cash_sale(setup, session.id, when=local(minutes_ago=m)) for m in (4, 3, 2)]
    period = offline.OfflinePeriodIn(session_id=session.id, started_at=started, ended_at=ended)
    await sync(any_db, setup, queue, period=period)
    await sync(any_db, setup, [], period=period)  # reported again: still one incident
    async with any_db.session() as s:
        incidents = [
            i for i in await audit.list_incidents(s, setup.venue_id, session_id=session.id) if i.kind == "offline"
        ]
    assert len(incidents) == 1
    text = incidents[0].description
    assert "Sin conexión con el servidor desde las" in text and "3 ventas" in text and "(5 min)" in text


async def test_device_keys_that_look_like_card_numbers_to_the_scrubber_still_sync(any_db, setup):
    """About one random UUID in 350 has hex groups whose digits, read across the dashes, pass for a card number:
    such a sale key or device id must not refuse the whole sync (the device would retry it forever and its queue
    would never empty). A key that is a card number is still refused."""
    session = await open_session(any_db, setup)
    key, device = "faad5e87-0451-4005-9794-694f5140d9b5", "94f5ed42-7df9-40f3-9575-4384114356e0"
    [result] = await sync(any_db, setup, [cash_sale(setup, session.id, key=key)], device=device)
    assert result.status == "accepted", result
    async with any_db.session() as s:
        await offline.report_queue(
            s,
            venue_id=setup.venue_id,
            register_id=setup.register_id,
            device_id=device,
            unsynced=2,
            user_id=setup.cashier_id,
        )
        assert await offline.unsynced_on_register(s, setup.register_id) == 2
    with pytest.raises(ValidationFailed):
        await sync(any_db, setup, [cash_sale(setup, session.id, key="4111-1111-1111-1111")])


async def test_an_offline_period_belongs_to_its_cashier_and_stays_within_the_session(any_db, setup):
    """Another cashier cannot put offline periods on a session that is not theirs (each report a new incident in
    its jornada's Z report), and the holder's device cannot stretch one over years: it is cut to the session."""
    from caja_core.users import service as users

    session = await open_session(any_db, setup)
    async with any_db.session() as s:
        other = await users.create_user(
            s, venue_id=setup.venue_id, username="diego", display_name="Diego", role="cashier", secret="305718"
        )
    for n in range(3):
        forged = offline.OfflinePeriodIn(
            session_id=session.id, started_at=f"2020-01-01T00:00:0{n}-03:00", ended_at="2099-01-01T00:00:00-03:00"
        )
        await sync(any_db, setup, [], device=f"ajeno-{n}", user_id=other.id, period=forged)
    stretched = offline.OfflinePeriodIn(
        session_id=session.id, started_at="2020-01-01T00:00:00-03:00", ended_at="2099-01-01T00:00:00-03:00"
    )
    await sync(any_db, setup, [], period=stretched)
    async with any_db.session() as s:
        incidents = [
            i for i in await audit.list_incidents(s, setup.venue_id, session_id=session.id) if i.kind == "offline"
        ]
    assert len(incidents) == 1, [i.description for i in incidents]
    minutes = int(incidents[0].description.split(" min)")[0].rsplit("(", 1)[1])
    assert minutes <= 30, incidents[0].description  # the session opened moments ago


# ---- a device that reported unsynced sales and never returns --------------------------------------------------------


async def close(db, st, session_id, **kw):
    async with db.session() as s:
        return await sessions.close_session(
            s, venue_id=st.venue_id, session_id=session_id, user_id=st.cashier_id, counted={}, **kw
        )


async def test_a_supervisor_closes_without_the_sales_of_a_device_that_never_returns(any_db, setup):
    session = await open_session(any_db, setup, initial_cash=0)
    held = [cash_sale(setup, session.id, received=5000) for _ in range(2)]  # still on the lost tablet
    tampered = cash_sale(setup, session.id, price=100)
    async with any_db.session() as s:
        await offline.report_queue(
            s,
            venue_id=setup.venue_id,
            register_id=setup.register_id,
            device_id="tablet-perdida-1",
            unsynced=3,
            user_id=setup.cashier_id,
        )
    with pytest.raises(Conflict) as refused:
        await close(any_db, setup, session.id)
    [device] = refused.value.details["devices"]
    assert device["device"] == "tablet-perdi" and device["unsynced"] == 3 and device["last_seen"]
    reason = "La tablet se cayó al agua y no enciende"
    with pytest.raises(SupervisorRequired):  # the cashier alone cannot leave sales out
        await close(any_db, setup, session.id, without_offline_reason=reason)
    with pytest.raises(ValidationFailed):
        await close(any_db, setup, session.id, without_offline_reason="x")
    grant = await permissions.authorize(
        any_db,
        venue_id=setup.venue_id,
        action=Action.CLOSE_WITHOUT_OFFLINE,
        actor_id=setup.cashier_id,
        code=SUPERVISOR_PIN,
        session_id=session.id,
    )
    result = await close(any_db, setup, session.id, without_offline_reason=reason, authorization_id=grant)
    assert result.status == "closed" and result.expected_cash == 0
    async with any_db.session() as s:
        incidents = await audit.list_incidents(s, setup.venue_id, session_id=session.id)
        events = (
            await s.scalars(select(AuditEvent).where(AuditEvent.action == "session.closed_without_offline_sales"))
        ).all()
    [left_out] = [i for i in incidents if i.kind == "offline_unsynced_at_close"]
    assert "sin 3 ventas sin conexión del equipo tablet-perdi" in left_out.description
    assert "último aviso" in left_out.description and reason in left_out.description
    [event] = events
    assert event.payload["unsynced"] == 3 and event.payload["authorized_by"] == setup.supervisor_id

    # The tablet comes back after all: the closed session does not change, its sales wait for a supervisor.
    results = await sync(any_db, setup, [*held, tampered], device="tablet-perdida-1")
    assert [r.status for r in results] == ["late", "late", "rejected"]
    assert "después del cierre" in results[0].reason and results[0].total == 3500 and results[0].sale_id is None
    assert [r.status for r in await sync(any_db, setup, held, device="tablet-perdida-1")] == ["late", "late"]
    closed = await session_of(any_db, setup, session.id)
    assert closed.ticket_count == 0 and closed.cash_sales_total == 0 and closed.status == "closed"
    assert await paid_sales(any_db, setup, session.id) == []
    async with any_db.session() as s:
        report = await reports.jornada_report(s, setup.venue_id, closed.jornada_id)
        assert [(x.total, x.resolved) for x in report.late_offline_sales] == [(3500, False), (3500, False)]
        assert [i.id for i in report.closed_without_offline] == [left_out.id]
        late = await offline.list_offline_sales(s, setup.venue_id, status="late")
        await offline.resolve_rejected(
            s,
            venue_id=setup.venue_id,
            offline_sale_id=late[0].id,
            user_id=setup.supervisor_id,
            note="Efectivo entregado a tesorería",
        )
    [first, second] = await sync(any_db, setup, held, device="tablet-perdida-1")
    assert (first.status, second.status) == ("resolved", "late")  # the tablet may forget the settled one
    async with any_db.session() as s:
        report = await reports.session_report(s, setup.venue_id, session.id)
    assert [(x.resolved, x.resolution) for x in report.late_offline_sales] == [
        (True, "Efectivo entregado a tesorería"),
        (False, ""),
    ]
    # The register's next session is not held by the device that was left out.
    following = await open_session(any_db, setup, initial_cash=0)
    assert (await close(any_db, setup, following.id)).status == "closed"


async def test_an_offline_line_is_priced_with_the_modifiers_the_device_offered(any_db, setup):
    """The device sells a product with the modifiers it was given (the chooser the sale screen has): the server
    prices each line as the product plus its modifiers, records them on the line as sold, and refuses a
    modifier the product does not offer or a price that leaves one out."""
    session = await open_session(any_db, setup)
    async with any_db.session() as s:
        doble = await catalog.create_modifier(
            s, venue_id=setup.venue_id, name="Doble", price_delta=2000, product_id=setup.products["Piscola"]
        )
        hielo = await catalog.create_modifier(
            s, venue_id=setup.venue_id, name="Sin hielo", price_delta=0, category_id=setup.category_id
        )

    def with_modifiers(modifier_ids, price, product="Piscola"):
        sale = cash_sale(setup, session.id, product=product, quantity=2, price=price)
        line = msgspec.structs.replace(sale.lines[0], modifier_ids=modifier_ids)
        return msgspec.structs.replace(sale, lines=[line])

    good = with_modifiers([doble.id, hielo.id], 8000)
    # Withdrawn after the device was given it: the device could not know, the sale stands at its price.
    async with any_db.session() as s:
        await catalog.set_modifier_active(s, venue_id=setup.venue_id, modifier_id=doble.id, active=False)
    left_out = with_modifiers([doble.id], 6000)
    not_offered = with_modifiers([doble.id], 4000, product="Agua")
    results = await sync(any_db, setup, [good, left_out, not_offered])
    assert [r.status for r in results] == ["accepted", "rejected", "rejected"]
    assert results[0].total == 16000
    assert "precio de Piscola" in results[1].reason and "$8.000" in results[1].reason
    assert "modificador" in results[2].reason
    [paid] = await paid_sales(any_db, setup, session.id)
    async with any_db.session() as s:
        [line] = (await sales.get_sale(s, setup.venue_id, paid.id)).items
    assert (line.unit_price, line.line_total) == (8000, 16000)
    assert [(m.name, m.price) for m in line.modifiers] == [("Doble", 2000), ("Sin hielo", 0)]


# ---- another cashier, a reused key, a bad sale in a batch: each answered on its own, nothing on others' sessions ----


async def other_cashier_at_own_register(db, st):
    """Diego, a cashier with his own open session on "Caja 2" (he never held "Caja 1")."""
    import uuid

    from caja_core.users import service as users

    async with db.session() as s:
        diego = await users.create_user(
            s, venue_id=st.venue_id, username="diego", display_name="Diego", role="cashier", secret="305718"
        )
        register = await registers.create_register(
            s,
            venue_id=st.venue_id,
            registry=make_registry(),
            actor_id=st.admin_id,
            data=registers.RegisterInput(code="CAJA2", name="Caja 2", primary_provider="fake"),
        )
        own = await sessions.open_session(
            s,
            venue_id=st.venue_id,
            register_id=register.id,
            user_id=diego.id,
            initial_cash=0,
            open_key=str(uuid.uuid4()),
        )
    return diego, register, own


def as_cashier(sale, cashier_id, *, register_id=None, session_id=None):
    return msgspec.structs.replace(
        sale,
        cashier_id=cashier_id,
        register_id=register_id or sale.register_id,
        session_id=session_id or sale.session_id,
    )


async def report(db, st, *, user_id, unsynced, device="tablet-ajena", register_id=None):
    async with db.session() as s:
        await offline.report_queue(
            s,
            venue_id=st.venue_id,
            register_id=register_id or st.register_id,
            device_id=device,
            unsynced=unsynced,
            user_id=user_id,
        )


async def test_only_the_registers_holder_or_the_device_that_sold_on_it_reports_its_queue(any_db, setup):
    from caja_core.errors import Forbidden

    session = await open_session(any_db, setup, initial_cash=0)
    diego, _, _ = await other_cashier_at_own_register(any_db, setup)
    with pytest.raises(ValidationFailed) as absurd:  # a queue no device holds, whoever says it
        await report(any_db, setup, user_id=setup.cashier_id, unsynced=99_999)
    assert f"entre 0 y {offline.MAX_UNSYNCED}" in absurd.value.message
    with pytest.raises(Forbidden):  # Diego holds "Caja 2": he does not speak for "Caja 1"'s queue
        await report(any_db, setup, user_id=diego.id, unsynced=500)
    await report(any_db, setup, user_id=setup.cashier_id, unsynced=2, device="tablet-a")
    with pytest.raises(Forbidden):  # nor empties the queue of a device of that register
        await report(any_db, setup, user_id=diego.id, unsynced=0, device="tablet-a")
    async with any_db.session() as s:
        assert await offline.unsynced_on_register(s, setup.register_id) == 2
    await report(any_db, setup, user_id=setup.cashier_id, unsynced=0, device="tablet-a")
    assert (await close(any_db, setup, session.id)).status == "closed"

    # Her device sold offline on "Caja 1" and comes back after the close: it syncs and reports its queue.
    held = [cash_sale(setup, session.id, when=local(minutes_ago=0.5)) for _ in range(3)]
    results = await sync(any_db, setup, held[:1], device="tablet-a")
    assert [r.status for r in results] == ["late"]
    await report(any_db, setup, user_id=setup.cashier_id, unsynced=2, device="tablet-a")
    async with any_db.session() as s:
        assert await offline.unsynced_on_register(s, setup.register_id) == 2
    await sync(any_db, setup, held[1:], device="tablet-a")
    await report(any_db, setup, user_id=setup.cashier_id, unsynced=0, device="tablet-a")
    async with any_db.session() as s:
        assert await offline.unsynced_on_register(s, setup.register_id) == 0


async def test_a_former_holder_who_only_reported_cannot_hold_the_registers_next_close(any_db, setup):
    """Her tablet only ever reported its queue on «Caja 1» (it sold nothing offline there). Once her session is
    closed the register is not hers: that tablet's queue may only shrink, so a made-up count cannot hold the next
    cashier's close."""
    from caja_core.errors import Forbidden

    session = await open_session(any_db, setup, initial_cash=0)
    await report(any_db, setup, user_id=setup.cashier_id, unsynced=3, device="tablet-b")
    await report(any_db, setup, user_id=setup.cashier_id, unsynced=1, device="tablet-b")
    await report(any_db, setup, user_id=setup.cashier_id, unsynced=0, device="tablet-b")
    assert (await close(any_db, setup, session.id)).status == "closed"
    with pytest.raises(Forbidden):
        await report(any_db, setup, user_id=setup.cashier_id, unsynced=offline.MAX_UNSYNCED, device="tablet-b")
    async with any_db.session() as s:
        assert await offline.unsynced_on_register(s, setup.register_id) == 0
    await report(any_db, setup, user_id=setup.cashier_id, unsynced=0, device="tablet-b")  # nothing: still heard


async def test_sales_into_another_cashiers_session_are_not_received_nor_leave_incidents(any_db, setup):
    session = await open_session(any_db, setup, initial_cash=0)
    assert (await close(any_db, setup, session.id)).status == "closed"
    diego, _, _ = await other_cashier_at_own_register(any_db, setup)
    forged = [as_cashier(cash_sale(setup, session.id, price=1), diego.id) for _ in range(offline.MAX_BATCH)]
    results = await sync(any_db, setup, forged, user_id=diego.id, device="equipo-ajeno")
    assert {r.status for r in results} == {"not_yours"}
    assert "de otro cajero" in results[0].reason
    async with any_db.session() as s:
        assert await offline.list_offline_sales(s, setup.venue_id) == []
        incidents = await audit.list_incidents(s, setup.venue_id, session_id=session.id)
    assert [i.kind for i in incidents if i.kind.startswith("offline")] == []


async def test_rejected_sales_name_who_sent_them_and_are_capped_per_cashier_and_device(any_db, setup):
    diego, register, own = await other_cashier_at_own_register(any_db, setup)
    tampered = [
        as_cashier(cash_sale(setup, own.id, price=1), diego.id, register_id=register.id)
        for _ in range(offline.MAX_REJECTED + 5)
    ]
    results = await sync(any_db, setup, tampered, user_id=diego.id, device="equipo-d")
    assert [r.status for r in results] == ["rejected"] * offline.MAX_REJECTED + ["limited"] * 5
    assert "Demasiadas ventas rechazadas" in results[-1].reason
    async with any_db.session() as s:
        incidents = [
            i
            for i in await audit.list_incidents(s, setup.venue_id, session_id=own.id)
            if i.kind == "offline_sale_rejected"
        ]
        kept = await offline.list_offline_sales(s, setup.venue_id)
    assert len(incidents) == len(kept) == offline.MAX_REJECTED  # the held-back ones left nothing
    assert all("enviada por Diego desde el equipo equipo-d" in i.description for i in incidents)
    # A good sale still goes through; a resent rejected one still gets its first answer.
    good = as_cashier(cash_sale(setup, own.id), diego.id, register_id=register.id)
    again = await sync(any_db, setup, [good, tampered[0], tampered[-1]], user_id=diego.id, device="equipo-d")
    assert [r.status for r in again] == ["accepted", "rejected", "limited"]


async def test_a_key_is_its_cashiers_and_the_same_key_with_another_content_is_a_conflict(any_db, setup):
    session = await open_session(any_db, setup)
    first = cash_sale(setup, session.id, key="k-1")
    [accepted] = await sync(any_db, setup, [first])
    assert accepted.status == "accepted"
    changed = cash_sale(setup, session.id, product="Piscola", key="k-1")
    [conflict] = await sync(any_db, setup, [changed])
    assert conflict.status == "conflict" and conflict.sale_id is None
    assert "ya se recibió con otro contenido" in conflict.reason
    [again] = await sync(any_db, setup, [first])  # the same content resent: its first answer
    assert (again.status, again.sale_id) == ("accepted", accepted.sale_id)
    assert [x.total for x in await paid_sales(any_db, setup, session.id)] == [3500]

    # Another cashier's "k-1" is not "already received": it is his own sale.
    diego, register, own = await other_cashier_at_own_register(any_db, setup)
    his = as_cashier(cash_sale(setup, own.id, product="Agua", key="k-1"), diego.id, register_id=register.id)
    [result] = await sync(any_db, setup, [his], user_id=diego.id)
    assert result.status == "accepted" and result.sale_id != accepted.sale_id and result.total == 2000
    async with any_db.session() as s:
        assert sorted(k.key for k in await offline.list_offline_sales(s, setup.venue_id)) == ["k-1", "k-1"]


async def test_a_key_received_before_keys_were_scoped_to_their_cashier_still_answers(any_db, setup):
    from sqlalchemy import update

    from caja_core.offline.models import OfflineSale

    session = await open_session(any_db, setup)
    sale = cash_sale(setup, session.id)
    [first] = await sync(any_db, setup, [sale])
    async with any_db.session() as s:  # stored as it was before: the bare key
        await s.execute(update(OfflineSale).values(idempotency_key=sale.key))
    [again] = await sync(any_db, setup, [sale])
    assert (again.status, again.sale_id) == ("accepted", first.sale_id)
    assert len(await paid_sales(any_db, setup, session.id)) == 1


async def test_each_sale_of_a_batch_is_judged_on_its_own(any_db, setup):
    session = await open_session(any_db, setup)
    nowhere = msgspec.structs.replace(cash_sale(setup, session.id), register_id=999_999)
    batch = [cash_sale(setup, session.id), nowhere, cash_sale(setup, session.id, product="Agua")]
    results = await sync(any_db, setup, batch)
    assert [r.status for r in results] == ["accepted", "rejected", "accepted"]
    assert "La caja de la venta no existe" in results[1].reason
    assert sorted(x.total for x in await paid_sales(any_db, setup, session.id)) == [2000, 3500]
    async with any_db.session() as s:  # nothing half-written for the bad one
        assert nowhere.key not in {k.key for k in await offline.list_offline_sales(s, setup.venue_id)}


# ---- the sale's time, the device's id, the key's format ------------------------------------------------------------


async def test_a_sale_dated_beyond_a_small_clock_skew_in_the_future_is_rejected(any_db, setup):
    session = await open_session(any_db, setup)
    ahead = cash_sale(setup, session.id, when=local(minutes_ago=-5))
    slightly = cash_sale(setup, session.id, when=local(minutes_ago=-1))
    results = await sync(any_db, setup, [ahead, slightly])
    assert [r.status for r in results] == ["rejected", "accepted"]
    assert "posterior a la del servidor" in results[0].reason


async def test_a_sale_dated_after_its_sessions_close_is_outside_it_not_late(any_db, setup):
    from sqlalchemy import update

    session = await open_session(any_db, setup, initial_cash=0)
    assert (await close(any_db, setup, session.id)).status == "closed"
    async with any_db.session() as s:
        await s.execute(
            update(sessions.CashSession)
            .where(sessions.CashSession.id == session.id)
            .values(opened_at=utcnow() - timedelta(minutes=90), closed_at=utcnow() - timedelta(minutes=30))
        )
    before = cash_sale(setup, session.id, when=local(minutes_ago=45))
    after = cash_sale(setup, session.id, when=local(minutes_ago=5))
    results = await sync(any_db, setup, [before, after])
    assert [r.status for r in results] == ["late", "rejected"]
    assert "posterior al cierre" in results[1].reason and "fuera de la sesión" in results[1].reason


async def test_a_too_long_device_id_is_a_length_error(any_db, setup):
    session = await open_session(any_db, setup)
    with pytest.raises(ValidationFailed) as refused:
        await sync(any_db, setup, [cash_sale(setup, session.id)], device="x" * 5000)
    assert "demasiado largo" in refused.value.message and "Falta" not in refused.value.message
    assert await paid_sales(any_db, setup, session.id) == []


async def test_hex_keys_are_never_taken_for_card_data(any_db, setup):
    """``uuid4().hex`` keys whose digits the card-data scrubber would take for a card number or a track."""
    from caja_core.carddata import scrub_text

    session = await open_session(any_db, setup)
    keys = ["817938f85742490487753d9768d03e25", "78740125840544d6ae325ac04265f5a7"]
    assert all(scrub_text(k) != k for k in keys)  # what the scrubber alone says of them
    results = await sync(any_db, setup, [cash_sale(setup, session.id, key=k) for k in keys], device=keys[1])
    assert [r.status for r in results] == ["accepted", "accepted"]
    for text in ("4111111111111111", "4111 1111 1111 1111"):  # free text that is a card number is still refused
        with pytest.raises(ValidationFailed):
            await sync(any_db, setup, [cash_sale(setup, session.id, key=text)])


async def test_card_data_typed_into_an_offline_sale_is_refused_and_never_stored(any_db, setup):
    """A card number or a track typed where the backup phone's brand goes, or sent as the sale's time, is neither
    accepted nor stored: not in the attempt, not in the rejection's reason, not in the incident."""
    from caja_core.audit.models import Incident
    from caja_core.offline.models import OfflineSale

    session = await open_session(any_db, setup)
    typed = ["4111 1111 1111 1111", "%B4111111111111111^X", "4111111111111111"]
    phones = [
        msgspec.structs.replace(
            phone_sale(setup, session.id),
            backup=offline.BackupReference(authorization_code="A1B2C3", last4="4242", brand=text, card_type="débito"),
        )
        for text in typed
    ]
    clock = cash_sale(setup, session.id, when="4111111111111111")
    results = await sync(any_db, setup, [*phones, clock])
    assert [r.status for r in results] == ["rejected"] * 4
    assert all("marca de la tarjeta" in r.reason for r in results[:3])
    assert "no es válida" in results[3].reason
    assert await paid_sales(any_db, setup, session.id) == []
    async with any_db.session() as s:
        stored = [
            *[a.card_brand or "" for a in await s.scalars(select(PaymentAttempt))],
            *[f"{o.reason} {o.payload} {o.local_time}" for o in await s.scalars(select(OfflineSale))],
            *[i.description for i in await s.scalars(select(Incident))],
        ]
    for text in stored:
        assert "4111111111111111" not in text and "4111 1111 1111 1111" not in text, text
    assert all(r.reason.count("4111") == 0 for r in results)


async def test_offline_periods_are_not_multiplied_nor_stretched_past_the_close(any_db, setup):
    """The holder's device resending one outage with its start nudged by microseconds, or from many device ids,
    makes one incident per overlapping period and at most ``MAX_PERIODS`` an hour on a session; a period reported
    after the close ends at the close."""
    from sqlalchemy import update

    from caja_core.offline.models import OfflinePeriod

    closed = await open_session(any_db, setup, initial_cash=0)
    assert (await close(any_db, setup, closed.id)).status == "closed"
    async with any_db.session() as s:
        await s.execute(
            update(sessions.CashSession)
            .where(sessions.CashSession.id == closed.id)
            .values(opened_at=utcnow() - timedelta(minutes=60), closed_at=utcnow() - timedelta(minutes=20))
        )
    late = offline.OfflinePeriodIn(session_id=closed.id, started_at=local(minutes_ago=25), ended_at=local(0))
    await sync(any_db, setup, [], device="equipo-tarde", period=late)
    async with any_db.session() as s:
        row = await s.scalar(select(OfflinePeriod).where(OfflinePeriod.device_id == "equipo-tarde"))
        closed_at = (await sessions.get_session(s, setup.venue_id, closed.id)).closed_at
    assert row is not None and row.ended_at <= closed_at

    session = await open_session(any_db, setup, initial_cash=0)
    for n in range(5):  # the same outage, its start a few microseconds apart each time
        nudged = offline.OfflinePeriodIn(
            session_id=session.id, started_at=local(minutes_ago=5 - n / 60_000_000), ended_at=local(minutes_ago=1)
        )
        await sync(any_db, setup, [], period=nudged)
    for n in range(offline.MAX_PERIODS + 5):  # short, separate outages from ever new "devices"
        when = local(minutes_ago=0.5 - n / 1000)
        blip = offline.OfflinePeriodIn(session_id=session.id, started_at=when, ended_at=when)
        await sync(any_db, setup, [], device=f"equipo-{n}", period=blip)
    async with any_db.session() as s:
        found = await audit.list_incidents(s, setup.venue_id, session_id=session.id)
    assert len([i for i in found if i.kind == "offline"]) == offline.MAX_PERIODS

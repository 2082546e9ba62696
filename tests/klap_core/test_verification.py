"""End-of-night verification of manual KLAP payments against KLAP's sales report (real SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from caja_core.audit import service as audit
from caja_core.clock import to_local, utcnow
from caja_core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from caja_core.payments.models import PaymentAttempt
from caja_core.payments.verification import (
    apply_report,
    dispute_attempt,
    list_manual_attempts,
    verify_attempt_by_hand,
)
from caja_core.reports.service import jornada_report
from caja_klap.provider import KlapProvider

from .helpers import add_attempt, klap_setup, new_sale, open_session

KLAP = KlapProvider()

HEADER = "Fecha;Hora;Monto;Código de autorización;Últimos 4 dígitos;Marca;Tipo;Estado\n"


def report(*rows: tuple[int, str, str], days_ago: int = 0) -> bytes:
    now = to_local(utcnow() - timedelta(days=days_ago), "America/Santiago")
    lines = [
        f"{now:%d-%m-%Y};{now:%H:%M};${amount:,};{auth};****{last4};Visa;Débito;Aprobada".replace(",", ".")
        for amount, auth, last4 in rows
    ]
    return (HEADER + "\n".join(lines) + "\n").encode()


@pytest.fixture
async def night(any_db):
    """A jornada with three manual KLAP payments confirmed by the cashier."""
    setup, _registry = await klap_setup(any_db)
    session_id = await open_session(any_db, setup)
    attempts = []
    for product, auth, last4 in (
        ("Piscola", "A1B2C3", "4242"),
        ("Cerveza", "D4E5F6", "1111"),
        ("Agua", "G7H8J9", "5555"),
    ):
        sale_id, total = await new_sale(any_db, setup, session_id, product)
        attempts.append(
            await add_attempt(
                any_db,
                setup,
                session_id,
                sale_id,
                total,
                state="approved_manual",
                auth=auth,
                last4=last4,
                pay_sale=True,
            )
        )
    return any_db, setup, attempts


async def _states(db, ids):
    async with db.reader() as s:
        return [(await s.get(PaymentAttempt, i)).state for i in ids]


async def _apply(db, setup, data: bytes, user_id=None):
    parsed = KLAP.parse_report(data)
    async with db.session() as s:
        return await apply_report(
            s,
            provider=KLAP,
            venue_id=setup.venue_id,
            jornada_id=setup.jornada_id,
            rows=parsed,
            user_id=user_id or setup.supervisor_id,
        )


async def _incidents(db, setup):
    async with db.reader() as s:
        return await audit.list_incidents(s, setup.venue_id, jornada_id=setup.jornada_id)


async def test_matched_attempts_are_verified_and_the_rest_become_jornada_incidents(night):
    db, setup, (piscola, cerveza, agua) = night
    data = report((6000, "A1B2C3", "4242"), (3500, "D4E5F6", "1111"), (9900, "Z9Z9Z9", "7777"))
    result = await _apply(db, setup, data)
    assert sorted(result.verified) == sorted([piscola, cerveza])
    assert result.unmatched_attempts == [agua] and result.unmatched_rows == [4]
    assert await _states(db, [piscola, cerveza, agua]) == ["verified", "verified", "approved_manual"]
    incidents = await _incidents(db, setup)
    assert sorted(i.kind for i in incidents) == ["klap_unmatched_attempt", "klap_unmatched_report_row"]
    by_kind = {i.kind: i for i in incidents}
    assert by_kind["klap_unmatched_attempt"].attempt_id == agua
    assert "$9.900" in by_kind["klap_unmatched_report_row"].description
    async with db.reader() as s:
        z = await jornada_report(s, setup.venue_id, setup.jornada_id)
    assert sorted(i.kind for i in z.incidents) == ["klap_unmatched_attempt", "klap_unmatched_report_row"]
    async with db.reader() as s:
        listed = {a.id: a for a in await list_manual_attempts(s, setup.venue_id, setup.jornada_id)}
    assert listed[piscola].verified_at is not None and "fila 2" in listed[piscola].verification_note

    # The same report again changes nothing and opens nothing new.
    again = await _apply(db, setup, data)
    assert again.verified == [] and sorted(again.already_verified) == sorted([piscola, cerveza])
    assert again.incidents_opened == 0 and len(await _incidents(db, setup)) == 2

    # A corrected report (the water was charged; the 9.900 row was another venue's) resolves both.
    fixed = await _apply(
        db, setup, report((6000, "A1B2C3", "4242"), (3500, "D4E5F6", "1111"), (2000, "G7H8J9", "5555"))
    )
    assert fixed.verified == [agua] and fixed.incidents_resolved == 1
    assert await _states(db, [agua]) == ["verified"]
    unresolved = [i for i in await _incidents(db, setup) if not i.resolved]
    assert [i.kind for i in unresolved] == ["klap_unmatched_report_row"]


async def test_same_code_other_amount_is_not_a_match_and_the_incident_says_why(night):
    db, setup, (_piscola, _cerveza, agua) = night
    result = await _apply(
        db, setup, report((6000, "A1B2C3", "4242"), (3500, "D4E5F6", "1111"), (2500, "G7H8J9", "5555"))
    )
    assert result.unmatched_attempts == [agua]
    incident = next(i for i in await _incidents(db, setup) if i.kind == "klap_unmatched_attempt")
    assert "G7H8J9" in incident.description and "$2.500" in incident.description


async def test_a_report_with_bad_rows_changes_nothing(night):
    db, setup, attempts = night
    bad = report((6000, "A1B2C3", "4242"), (3500, "D4E5F6", "1111")) + b"27-11-2026;xx;abc;ZZ;;;;\n"
    parsed = KLAP.parse_report(bad)
    assert [e.line for e in parsed.errors] == [4]
    with pytest.raises(ValidationFailed) as err:
        async with db.session() as s:
            await apply_report(
                s,
                provider=KLAP,
                venue_id=setup.venue_id,
                jornada_id=setup.jornada_id,
                rows=parsed,
                user_id=setup.supervisor_id,
            )
    assert err.value.details["errors"][0]["line"] == 4
    assert await _states(db, attempts) == ["approved_manual"] * 3
    assert await _incidents(db, setup) == []


async def test_rows_from_other_nights_are_ignored(night):
    db, setup, _attempts = night
    result = await _apply(db, setup, report((6000, "A1B2C3", "4242"), days_ago=6))
    assert result.outside_jornada == [2] and result.unmatched_rows == []
    assert [i.kind for i in await _incidents(db, setup)] == ["klap_unmatched_attempt"] * 3


async def test_only_supervisors_verify_and_only_their_venue(night):
    db, setup, (piscola, _cerveza, _agua) = night
    with pytest.raises(Forbidden):
        await _apply(db, setup, report((6000, "A1B2C3", "4242")), user_id=setup.cashier_id)
    other, _ = await klap_setup(db, slug="otro")
    async with db.session() as s:
        with pytest.raises(NotFound):
            await verify_attempt_by_hand(
                s, venue_id=other.venue_id, attempt_id=piscola, user_id=other.supervisor_id, note="visto en la app"
            )


async def test_verify_by_hand_and_dispute(night):
    db, setup, (piscola, cerveza, agua) = night
    async with db.session() as s:
        with pytest.raises(ValidationFailed):
            await verify_attempt_by_hand(
                s, venue_id=setup.venue_id, attempt_id=piscola, user_id=setup.supervisor_id, note=""
            )
    async with db.session() as s:
        out = await verify_attempt_by_hand(
            s,
            venue_id=setup.venue_id,
            attempt_id=piscola,
            user_id=setup.supervisor_id,
            note="Visto en la app KLAP del celular 1",
        )
        assert out.state == "verified" and "Supervisora" in out.verification_note
        disputed = await dispute_attempt(
            s,
            venue_id=setup.venue_id,
            attempt_id=cerveza,
            user_id=setup.supervisor_id,
            reason="No aparece en la app KLAP",
        )
        assert disputed.state == "disputed"
    async with db.session() as s:
        with pytest.raises(Conflict):
            await dispute_attempt(
                s, venue_id=setup.venue_id, attempt_id=piscola, user_id=setup.supervisor_id, reason="cambio de opinión"
            )
    async with db.session() as s:
        with pytest.raises(Conflict):
            await verify_attempt_by_hand(
                s, venue_id=setup.venue_id, attempt_id=cerveza, user_id=setup.supervisor_id, note="sí estaba"
            )
    assert await _states(db, [piscola, cerveza, agua]) == ["verified", "disputed", "approved_manual"]
    incidents = await _incidents(db, setup)
    assert [(i.kind, i.attempt_id) for i in incidents] == [("klap_disputed", cerveza)]
    # The report then leaves the disputed one alone and verifies the rest.
    result = await _apply(
        db, setup, report((6000, "A1B2C3", "4242"), (3500, "D4E5F6", "1111"), (2000, "G7H8J9", "5555"))
    )
    assert result.verified == [agua] and sorted(result.already_verified) == sorted([piscola, cerveza])
    async with db.reader() as s:
        assert (await s.scalars(select(PaymentAttempt.state).where(PaymentAttempt.id == cerveza))).one() == "disputed"

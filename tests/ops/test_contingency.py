"""Contingency mode: which methods a register keeps when its terminal or the database is down."""

from caja_core.fallback.policy import FallbackPolicy
from caja_core.ops.contingency import allowed_methods


def register(**overrides):
    data = {
        "payment_methods": ["cash", "card"],
        "primary_provider": "getnet",
        "backup_provider": "klap",
        "register_type": "HUMANA",
        "fallback_policy": {},
    }
    data.update(overrides)
    return data


def test_normal_mode_offers_everything_the_register_accepts():
    state = allowed_methods(register(), {"getnet:CAJA1": "closed"}, db_ok=True)
    assert state.mode == "normal" and not state.is_contingency
    assert state.allowed_methods == ["cash", "card", "backup"]
    assert state.message == ""


def test_open_breaker_leaves_cash_and_backup_phone_by_default():
    state = allowed_methods(register(), {"getnet:CAJA1": "open"}, db_ok=True)
    assert state.mode == "contingency"
    assert state.allowed_methods == ["cash", "backup"]
    assert not state.primary_available
    assert state.message == "Modo contingencia: solo efectivo, celular de respaldo."
    assert state.reasons == ["El terminal de tarjetas no responde (corte activo)."]


def test_half_open_breaker_is_still_contingency():
    state = allowed_methods(register(), {"getnet:CAJA1": "half_open"}, db_ok=True)
    assert state.mode == "contingency" and "card" not in state.allowed_methods


def test_database_down_uses_the_registers_offline_rule():
    cash_only = FallbackPolicy(offline_methods=["cash"])
    state = allowed_methods(register(policy=cash_only), {}, db_ok=False)
    assert state.mode == "contingency"
    assert state.allowed_methods == ["cash"]
    assert state.reasons == ["La base de datos no responde."]
    assert not state.database_available

    with_card = FallbackPolicy(offline_methods=["cash", "card", "backup"])
    state = allowed_methods(register(policy=with_card), {}, db_ok=False)
    assert state.allowed_methods == ["cash", "card", "backup"]


def test_virtual_register_without_cash_or_backup_cannot_sell_in_contingency():
    virtual = register(payment_methods=["card"], backup_provider=None, register_type="VIRTUAL")
    state = allowed_methods(virtual, {"getnet:V": "open"}, db_ok=True)
    assert state.allowed_methods == []
    assert state.message == "Modo contingencia: no se puede cobrar en esta caja."


def test_reads_breaker_rows_and_register_objects():
    class Row:
        def __init__(self, state):
            self.state = state

    class Reg:
        payment_methods = ("cash", "card")
        primary_provider = "getnet"
        backup_provider = "klap"
        policy = FallbackPolicy(offline_methods=["backup"])

    state = allowed_methods(Reg(), [Row("closed"), Row("open")], db_ok=True)
    assert state.allowed_methods == ["backup"]


async def test_register_state_reads_policy_and_breakers_from_the_database(any_db):
    import pytest

    from caja_core.clock import utcnow
    from caja_core.errors import NotFound
    from caja_core.ops.contingency import register_state
    from caja_core.payments.models import BreakerState
    from caja_core.testing.factories import make_setup

    st = await make_setup(any_db)
    async with any_db.session() as s:
        state = await register_state(s, venue_id=st.venue_id, register_id=st.register_id)
    assert state.mode == "normal" and state.allowed_methods == ["cash", "card", "backup"]
    async with any_db.session() as s:
        s.add(
            BreakerState(
                device_key="fake:CAJA1",
                venue_id=st.venue_id,
                register_id=st.register_id,
                state="open",
                opened_at=utcnow(),
            )
        )
    async with any_db.session() as s:
        state = await register_state(s, venue_id=st.venue_id, register_id=st.register_id)
        assert state.mode == "contingency" and state.allowed_methods == ["cash", "backup"]
        with pytest.raises(NotFound):
            await register_state(s, venue_id=st.venue_id + 1, register_id=st.register_id)

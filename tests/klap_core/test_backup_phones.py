"""Backup phones: registry per venue, what the POS shows, and the policy that blocks opening a session."""

from __future__ import annotations

import pytest

from caja_core.backup_phones import service as phones
from caja_core.backup_phones.schemas import BackupPhoneInput
from caja_core.errors import Conflict, NotFound, ValidationFailed
from caja_core.fallback.policy import FallbackPolicy
from caja_core.registers import service as registers
from caja_core.sessions import service as sessions

from .helpers import klap_setup, open_session


async def test_crud_and_phone_for_register(any_db):
    setup, _ = await klap_setup(any_db, phones=0)
    async with any_db.session() as s:
        shared = await phones.create_phone(
            s,
            venue_id=setup.venue_id,
            actor_id=setup.admin_id,
            data=BackupPhoneInput(name="Celular barra", identifier="KLAP-01"),
        )
        assert await phones.phone_for_register(s, setup.venue_id, setup.register_id) == shared
        own = await phones.create_phone(
            s,
            venue_id=setup.venue_id,
            actor_id=setup.admin_id,
            data=BackupPhoneInput(name="Celular caja 1", identifier="KLAP-02", register_id=setup.register_id),
        )
        assert own.register_name == "Caja 1" and own.last_checked_at is not None
        # The register's own phone comes first; then a shared one.
        assert (await phones.phone_for_register(s, setup.venue_id, setup.register_id)).id == own.id
        assert await phones.count_available(s, setup.venue_id, setup.register_id) == 2
        await phones.set_availability(
            s, venue_id=setup.venue_id, phone_id=own.id, available=False, actor_id=setup.supervisor_id
        )
        assert (await phones.phone_for_register(s, setup.venue_id, setup.register_id)).id == shared.id
        assert await phones.count_available(s, setup.venue_id, setup.register_id) == 1
        updated = await phones.update_phone(
            s,
            venue_id=setup.venue_id,
            phone_id=shared.id,
            actor_id=setup.admin_id,
            data=BackupPhoneInput(name="Celular barra", identifier="KLAP-01", available=False),
        )
        assert not updated.available
        assert await phones.phone_for_register(s, setup.venue_id, setup.register_id) is None
        assert [p.identifier for p in await phones.list_phones(s, setup.venue_id)] == ["KLAP-01", "KLAP-02"]
        await phones.delete_phone(s, venue_id=setup.venue_id, phone_id=shared.id, actor_id=setup.admin_id)
        with pytest.raises(NotFound):
            await phones.get_phone(s, setup.venue_id, shared.id)


async def test_bad_input_and_duplicates_are_refused(any_db):
    setup, _ = await klap_setup(any_db, phones=0)
    other, _ = await klap_setup(any_db, phones=0, slug="otro")
    async with any_db.session() as s:
        await phones.create_phone(
            s, venue_id=setup.venue_id, actor_id=None, data=BackupPhoneInput(name="Uno", identifier="KLAP-01")
        )
        with pytest.raises(Conflict) as dup:
            await phones.create_phone(
                s, venue_id=setup.venue_id, actor_id=None, data=BackupPhoneInput(name="Dos", identifier="KLAP-01")
            )
        assert "KLAP-01" in dup.value.message
        with pytest.raises(ValidationFailed) as bad:
            await phones.create_phone(
                s,
                venue_id=setup.venue_id,
                actor_id=None,
                data=BackupPhoneInput(name="<script>", identifier="a|b", register_id=other.register_id),
            )
        assert set(bad.value.fields) == {"name", "identifier", "register_id"}
        # Another venue may reuse the identifier, and cannot see this venue's phones.
        await phones.create_phone(
            s, venue_id=other.venue_id, actor_id=None, data=BackupPhoneInput(name="Uno", identifier="KLAP-01")
        )
        mine = (await phones.list_phones(s, setup.venue_id))[0]
        with pytest.raises(NotFound):
            await phones.get_phone(s, other.venue_id, mine.id)


async def test_session_cannot_open_without_the_policys_backup_phones(any_db):
    setup, _registry = await klap_setup(any_db, phones=1)  # HUMANA: the policy asks for 2
    with pytest.raises(Conflict) as err:
        await open_session(any_db, setup)
    assert err.value.code == "session.backup_phones_missing" and "2" in err.value.message
    async with any_db.session() as s:
        extra = await phones.create_phone(
            s,
            venue_id=setup.venue_id,
            actor_id=setup.admin_id,
            data=BackupPhoneInput(name="Compartido", identifier="KLAP-99"),
        )
        await phones.set_availability(
            s, venue_id=setup.venue_id, phone_id=extra.id, available=False, actor_id=setup.admin_id
        )
    with pytest.raises(Conflict):
        await open_session(any_db, setup)
    async with any_db.session() as s:
        await phones.set_availability(
            s, venue_id=setup.venue_id, phone_id=extra.id, available=True, actor_id=setup.admin_id
        )
    session_id = await open_session(any_db, setup)
    async with any_db.session() as s:
        assert (await sessions.get_session(s, setup.venue_id, session_id)).status == "open"


async def test_oficina_needs_one_phone_and_a_policy_of_zero_needs_none(any_db):
    setup, registry = await klap_setup(any_db, phones=0, register_type="OFICINA")
    with pytest.raises(Conflict) as err:
        await open_session(any_db, setup)
    assert "1 celular" in err.value.message
    async with any_db.session() as s:
        current = await registers.get_register(s, setup.venue_id, setup.register_id)
        data = registers.RegisterInput(
            code=current.code,
            name=current.name,
            register_type=current.register_type,
            payment_methods=current.payment_methods,
            primary_provider="fake",
            backup_provider="klap",
            policy=FallbackPolicy(backup_phones_required=0),
        )
        await registers.update_register(
            s,
            venue_id=setup.venue_id,
            register_id=setup.register_id,
            data=data,
            registry=registry,
            actor_id=setup.admin_id,
        )
    assert await open_session(any_db, setup)

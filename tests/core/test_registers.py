import pytest

from caja_core.errors import NotFound, ValidationFailed
from caja_core.fallback.policy import FallbackPolicy
from caja_core.registers import service as registers
from caja_core.testing.factories import make_registry, make_setup

from .conftest import count_rows


async def test_defaults_follow_the_seed(sqlite_db):
    registry = make_registry()
    st = await make_setup(sqlite_db, registry)
    async with sqlite_db.session() as s:
        out = {}
        for rtype in ("TOTEM", "HUMANA", "OFICINA", "VIRTUAL"):
            data = registers.RegisterInput(
                code=f"R-{rtype}",
                name=rtype,
                register_type=rtype,
                payment_methods=["card"],
                primary_provider="fake",
                backup_provider=None if rtype == "VIRTUAL" else "fakebackup",
            )
            out[rtype] = await registers.create_register(
                s, venue_id=st.venue_id, data=data, registry=registry, actor_id=st.admin_id
            )
    assert out["HUMANA"].policy.enabled and out["HUMANA"].policy.max_wait_s == 60
    assert [out[t].policy.backup_phones_required for t in ("TOTEM", "HUMANA", "OFICINA", "VIRTUAL")] == [2, 2, 1, 0]
    assert out["VIRTUAL"].backup_provider is None


async def test_invalid_register_is_rejected_with_field_errors_and_nothing_written(sqlite_db):
    registry = make_registry()
    st = await make_setup(sqlite_db, registry)
    before = await count_rows(sqlite_db, "cash_registers")
    bad = registers.RegisterInput(
        code="CAJA1",
        name="",
        register_type="KIOSKO",
        payment_methods=["bitcoin"],
        primary_provider="nope",
        backup_provider="nope",
        policy=FallbackPolicy(max_wait_s=500),
    )
    with pytest.raises(ValidationFailed) as err:
        async with sqlite_db.session() as s:
            await registers.create_register(s, venue_id=st.venue_id, data=bad, registry=registry, actor_id=st.admin_id)
    fields = err.value.fields
    assert {"name", "register_type", "payment_methods", "primary_provider", "policy.max_wait_s"} <= set(fields)
    assert await count_rows(sqlite_db, "cash_registers") == before


async def test_virtual_register_has_no_backup_and_duplicate_code_refused(sqlite_db):
    registry = make_registry()
    st = await make_setup(sqlite_db, registry)
    with pytest.raises(ValidationFailed) as err:
        async with sqlite_db.session() as s:
            await registers.create_register(
                s,
                venue_id=st.venue_id,
                registry=registry,
                actor_id=st.admin_id,
                data=registers.RegisterInput(
                    code="WEB",
                    name="Web",
                    register_type="VIRTUAL",
                    payment_methods=["card"],
                    primary_provider="fake",
                    backup_provider="fakebackup",
                ),
            )
    assert "backup_provider" in err.value.fields
    with pytest.raises(ValidationFailed) as err:
        async with sqlite_db.session() as s:
            await registers.create_register(
                s,
                venue_id=st.venue_id,
                registry=registry,
                actor_id=st.admin_id,
                data=registers.RegisterInput(
                    code="caja1", name="Otra", primary_provider="fake", backup_provider="fakebackup"
                ),
            )
    assert "CAJA1" in err.value.fields["code"]


async def test_provider_settings_validated_and_secrets_write_only(sqlite_db):
    registry = make_registry()
    st = await make_setup(sqlite_db, registry, provider_settings={"fake": {"device": "t1", "webhook_secret": "s3cr3t"}})
    async with sqlite_db.session() as s:
        reg = await registers.get_register(s, st.venue_id, st.register_id)
        assert registers.public_settings(reg.provider_settings["fake"])["webhook_secret"] == ""
        data = registers.RegisterInput(
            code=reg.code,
            name="Caja renombrada",
            primary_provider="fake",
            backup_provider="fakebackup",
            provider_settings={"fake": {"device": "t2", "webhook_secret": ""}},
        )
        updated = await registers.update_register(
            s, venue_id=st.venue_id, register_id=reg.id, data=data, registry=registry, actor_id=st.admin_id
        )
    assert updated.provider_settings["fake"]["device"] == "t2"
    assert updated.provider_settings["fake"]["webhook_secret"] == "s3cr3t"  # blank kept the stored secret
    with pytest.raises(ValidationFailed) as err:
        async with sqlite_db.session() as s:
            data.provider_settings = {"fake": {"device": 12}}
            await registers.update_register(
                s, venue_id=st.venue_id, register_id=reg.id, data=data, registry=registry, actor_id=st.admin_id
            )
    assert "settings.fake" in err.value.fields
    assert "campo «Device»: debe ser texto" in err.value.fields["settings.fake"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan")])
async def test_a_number_setting_that_is_no_finite_number_is_refused_and_never_stored(any_db, value):
    """A float field without bounds in a plugin's Settings: NaN would be stored as JSON no database reads back
    (PostgreSQL refuses it) and would reach the provider as its wait."""
    registry = make_registry()
    st = await make_setup(any_db, registry)
    data = registers.RegisterInput(
        code="NAN", name="Caja", primary_provider="fake", provider_settings={"fake": {"timeout_s": value}}
    )
    with pytest.raises(ValidationFailed) as err:
        async with any_db.session() as s:
            await registers.create_register(s, venue_id=st.venue_id, registry=registry, actor_id=st.admin_id, data=data)
    assert "Configuración inválida para" in str(err.value) or err.value.fields, err.value
    said = " ".join([err.value.message, *err.value.fields.values()])
    assert "campo «Timeout s»: debe ser un número" in said and "Expected" not in said, said
    async with any_db.session() as s:
        assert "NAN" not in [r.code for r in await registers.list_registers(s, st.venue_id)]


async def test_other_venues_register_is_not_found(sqlite_db):
    st = await make_setup(sqlite_db)
    other = await make_setup(sqlite_db, slug="otro")
    with pytest.raises(NotFound):
        async with sqlite_db.session() as s:
            await registers.get_register(s, other.venue_id, st.register_id)


async def test_agent_token_rotation(sqlite_db):
    st = await make_setup(sqlite_db)
    async with sqlite_db.session() as s:
        t1 = await registers.rotate_agent_token(
            s, venue_id=st.venue_id, register_id=st.register_id, actor_id=st.admin_id
        )
    async with sqlite_db.session() as s:
        assert (await registers.register_for_agent_token(s, t1)).id == st.register_id
        t2 = await registers.rotate_agent_token(
            s, venue_id=st.venue_id, register_id=st.register_id, actor_id=st.admin_id
        )
    async with sqlite_db.session() as s:
        assert await registers.register_for_agent_token(s, t1) is None
        assert (await registers.register_for_agent_token(s, t2)).id == st.register_id
        assert await registers.register_for_agent_token(s, "caja_1_wrong") is None


async def test_a_register_saved_where_its_providers_plugin_is_not_loaded_keeps_the_provider_and_its_settings(any_db):
    """A server started without one provider's plugin (a typo in CAJA_LOAD_PLUGINS): saving a register for its
    name keeps the provider it has and that provider's settings; a provider that is not loaded cannot be newly
    chosen."""
    from caja_core.testing.fake import FakeProvider

    full = make_registry()
    st = await make_setup(any_db, full, provider_settings={"fake": {"host": "10.0.0.7"}})
    async with any_db.reader() as s:
        before = await registers.get_register(s, st.venue_id, st.register_id)
    without_primary = make_registry(FakeProvider("fakebackup"))
    data = registers.RegisterInput(
        code=before.code,
        name="Barra norte",
        register_type=before.register_type,
        payment_methods=list(before.payment_methods),
        primary_provider="fake",
        backup_provider="fakebackup",
        provider_settings={"fakebackup": dict(before.provider_settings.get("fakebackup") or {})},
        policy=before.policy,
    )
    async with any_db.session() as s:
        out = await registers.update_register(
            s,
            venue_id=st.venue_id,
            register_id=st.register_id,
            data=data,
            registry=without_primary,
            actor_id=st.admin_id,
        )
    assert out.name == "Barra norte" and out.primary_provider == "fake"
    assert out.provider_settings["fake"] == before.provider_settings["fake"]
    data.backup_provider = "otro"
    with pytest.raises(ValidationFailed) as err:
        async with any_db.session() as s:
            await registers.update_register(
                s,
                venue_id=st.venue_id,
                register_id=st.register_id,
                data=data,
                registry=without_primary,
                actor_id=st.admin_id,
            )
    assert "no cargado" in err.value.fields["backup_provider"]

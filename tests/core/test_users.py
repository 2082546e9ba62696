import pytest

from caja_core.errors import AuthFailed, Conflict, ValidationFailed
from caja_core.testing.factories import PASSWORD, PIN, make_setup
from caja_core.users import service as users


async def test_password_and_pin_login(sqlite_db):
    st = await make_setup(sqlite_db)
    async with sqlite_db.session() as s:
        assert (
            await users.authenticate_password(s, venue_id=st.venue_id, username="ADMIN", password=PASSWORD)
        ).role == "admin"
        assert (await users.authenticate_pin(s, venue_id=st.venue_id, user_id=st.cashier_id, pin=PIN)).role == "cashier"
    with pytest.raises(AuthFailed):  # cashiers don't log in with a password form
        async with sqlite_db.session() as s:
            await users.authenticate_password(s, venue_id=st.venue_id, username="cajera", password=PIN)


async def test_lockout_after_five_failures(sqlite_db):
    st = await make_setup(sqlite_db)
    for _ in range(4):
        with pytest.raises(AuthFailed) as err:
            async with sqlite_db.session() as s:
                try:
                    await users.authenticate_pin(s, venue_id=st.venue_id, user_id=st.cashier_id, pin="0000")
                finally:
                    await s.commit()
        assert err.value.code == "auth.invalid"
    with pytest.raises(AuthFailed) as err:
        async with sqlite_db.session() as s:
            try:
                await users.authenticate_pin(s, venue_id=st.venue_id, user_id=st.cashier_id, pin="0000")
            finally:
                await s.commit()
    assert err.value.code == "auth.locked"
    with pytest.raises(AuthFailed) as err:  # even the right PIN is refused while locked
        async with sqlite_db.session() as s:
            await users.authenticate_pin(s, venue_id=st.venue_id, user_id=st.cashier_id, pin=PIN)
    assert err.value.code == "auth.locked"
    async with sqlite_db.session() as s:
        await users.update_user(s, st.venue_id, st.cashier_id, actor_id=st.admin_id, unlock=True)
    async with sqlite_db.session() as s:
        assert (
            await users.authenticate_pin(s, venue_id=st.venue_id, user_id=st.cashier_id, pin=PIN)
        ).id == st.cashier_id


@pytest.mark.parametrize(
    "role,secret",
    [("cashier", "12"), ("cashier", "abcd"), ("cashier", "1234567"), ("admin", "corta"), ("supervisor", "")],
)
async def test_weak_secrets_rejected(sqlite_db, role, secret):
    st = await make_setup(sqlite_db)
    with pytest.raises(ValidationFailed):
        async with sqlite_db.session() as s:
            await users.create_user(
                s, venue_id=st.venue_id, username="nuevo", display_name="Nuevo", role=role, secret=secret
            )


async def test_duplicate_username_and_hash_never_plain(sqlite_db):
    st = await make_setup(sqlite_db)
    with pytest.raises(Conflict):
        async with sqlite_db.session() as s:
            await users.create_user(
                s, venue_id=st.venue_id, username="Admin", display_name="X", role="admin", secret="otra-clave-123"
            )
    from sqlalchemy import text

    async with sqlite_db.session() as s:
        hashes = [r[0] for r in await s.execute(text("select secret_hash from users"))]
    assert all(h.startswith("$argon2id$") for h in hashes) and PASSWORD not in "".join(hashes)

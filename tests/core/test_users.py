"""Users, PINs and passwords, and logins that lock: failures are recorded in their own transaction, throttled
per person and address and per account, in the database (so every instance sees them)."""

import pytest
from sqlalchemy import func, select, update

from caja_core.audit.models import AuditEvent
from caja_core.errors import AuthFailed, Conflict, RateLimited, ValidationFailed
from caja_core.testing.factories import PASSWORD, PIN, SUPERVISOR_PIN, make_setup
from caja_core.users import service as users
from caja_core.users import throttle
from caja_core.users.models import AuthThrottle, User
from caja_core.users.secrets import trivial_pin


async def _audit(db, action):
    async with db.session() as s:
        return await s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action))


async def test_password_and_pin_login(sqlite_db):
    st = await make_setup(sqlite_db)
    admin = await users.authenticate_password(sqlite_db, venue_id=st.venue_id, username="ADMIN", password=PASSWORD)
    assert admin.role == "admin"
    cashier = await users.authenticate_pin(sqlite_db, venue_id=st.venue_id, user_id=st.cashier_id, pin=PIN)
    assert cashier.role == "cashier"
    with pytest.raises(AuthFailed):  # cashiers don't log in with a password form
        await users.authenticate_password(sqlite_db, venue_id=st.venue_id, username="cajera", password=PIN)


async def test_failed_logins_are_saved_and_the_right_password_is_refused_after_them(any_db):
    """Found: the failure count, the lock and the audit event were rolled back with the error, so after 7
    wrong passwords the right one still worked and failures left no trace."""
    st = await make_setup(any_db)
    outcomes = []
    for _ in range(7):
        with pytest.raises((AuthFailed, RateLimited)) as err:
            await users.authenticate_password(
                any_db, venue_id=st.venue_id, username="super", password="no-es-la-clave", address="10.0.0.7"
            )
        outcomes.append(err.value.code)
    assert outcomes[:4] == ["auth.invalid"] * 4 and outcomes[4] == "auth.rate_limited"
    with pytest.raises(RateLimited):
        await users.authenticate_password(
            any_db, venue_id=st.venue_id, username="super", password=PASSWORD, address="10.0.0.7"
        )
    assert await _audit(any_db, "auth.login_failed") == 5  # blocked attempts write nothing
    async with any_db.session() as s:
        assert (await s.get(User, st.supervisor_id)).failed_logins == 5


async def test_someone_guessing_elsewhere_never_locks_the_admin_out(any_db):
    """Found: 10 bad tries from anywhere locked the real admin out (per username, in memory)."""
    st = await make_setup(any_db)
    for n in range(12):
        with pytest.raises((AuthFailed, RateLimited)):
            await users.authenticate_password(
                any_db, venue_id=st.venue_id, username="admin", password=f"adivinanza-{n}", address="203.0.113.9"
            )
    ok = await users.authenticate_password(
        any_db, venue_id=st.venue_id, username="admin", password=PASSWORD, address="192.168.1.20"
    )
    assert ok.id == st.admin_id
    async with any_db.session() as s:  # the guessing address is blocked, with a back-off that grows
        row = await s.get(AuthThrottle, throttle.person_address_key(str(st.admin_id), "203.0.113.9"))
        assert row.blocked_until is not None and row.failures == 0


async def test_pin_account_locks_across_addresses_and_an_admin_lifts_it(sqlite_db):
    st = await make_setup(sqlite_db)
    codes = []
    for n in range(10):  # two failures from each of five machines: no address is blocked, the account is
        with pytest.raises(AuthFailed) as err:
            await users.authenticate_pin(
                sqlite_db, venue_id=st.venue_id, user_id=st.cashier_id, pin="975310", address=f"10.1.0.{n // 2}"
            )
        codes.append(err.value.code)
    assert codes[-1] == "auth.locked" and set(codes[:-1]) == {"auth.invalid"}
    with pytest.raises(AuthFailed) as err:  # the right PIN from a clean machine is refused while locked
        await users.authenticate_pin(
            sqlite_db, venue_id=st.venue_id, user_id=st.cashier_id, pin=PIN, address="10.9.9.9"
        )
    assert err.value.code == "auth.locked"
    assert await _audit(sqlite_db, "auth.account_locked") == 1
    async with sqlite_db.session() as s:
        assert (await users.get_user(s, st.venue_id, st.cashier_id)).locked
        await users.update_user(s, st.venue_id, st.cashier_id, actor_id=st.admin_id, unlock=True)
    ok = await users.authenticate_pin(
        sqlite_db, venue_id=st.venue_id, user_id=st.cashier_id, pin=PIN, address="10.1.0.0"
    )
    assert ok.id == st.cashier_id


async def test_throttle_is_shared_by_instances(sqlite_db, sqlite_url):
    """Two app instances (two Database objects on one database) see the same counters."""
    from caja_core.db import Database

    st = await make_setup(sqlite_db)
    other = Database(sqlite_url)
    try:
        for db in (sqlite_db, other, sqlite_db, other, sqlite_db):
            with pytest.raises((AuthFailed, RateLimited)):
                await users.authenticate_password(
                    db, venue_id=st.venue_id, username="super", password="mala-clave-99", address="10.0.0.5"
                )
        with pytest.raises(RateLimited):
            await users.authenticate_password(
                other, venue_id=st.venue_id, username="super", password=PASSWORD, address="10.0.0.5"
            )
    finally:
        await other.dispose()


async def test_an_address_trying_many_names_is_blocked(sqlite_db):
    st = await make_setup(sqlite_db)
    for n in range(20):
        with pytest.raises((AuthFailed, RateLimited)):
            await users.authenticate_password(
                sqlite_db, venue_id=st.venue_id, username=f"nadie{n}", password="x" * 12, address="198.51.100.4"
            )
    with pytest.raises(RateLimited):
        await users.authenticate_password(
            sqlite_db, venue_id=st.venue_id, username="admin", password=PASSWORD, address="198.51.100.4"
        )


async def test_a_block_that_ended_gives_a_new_chance_with_a_longer_back_off(sqlite_db):
    st = await make_setup(sqlite_db)

    async def fail():
        with pytest.raises((AuthFailed, RateLimited)):
            await users.authenticate_password(
                sqlite_db, venue_id=st.venue_id, username="super", password="mala-clave-99", address="10.0.0.8"
            )

    key = throttle.person_address_key(str(st.supervisor_id), "10.0.0.8")
    durations = []
    for _ in range(2):
        for _ in range(5):
            await fail()
        async with sqlite_db.session() as s:
            row = await s.get(AuthThrottle, key)
            durations.append((row.blocked_until - row.updated_at).total_seconds())
            await s.execute(update(AuthThrottle).where(AuthThrottle.key == key).values(blocked_until=row.updated_at))
    assert durations == [60, 120]


@pytest.mark.parametrize(
    "pin",
    [
        "000000",
        "123456",
        "654321",
        "111111",
        "121212",
        "123123",
        "890123",
        "112233",
        "1234",
        "12345678",
        "12a456",
        "１２３４５６",
        "²34567",
    ],
)
async def test_weak_or_malformed_pins_are_refused(sqlite_db, pin):
    """Found: 4-digit PINs, 0000 and duplicates were accepted."""
    st = await make_setup(sqlite_db)
    with pytest.raises(ValidationFailed) as err:
        async with sqlite_db.session() as s:
            await users.create_user(
                s, venue_id=st.venue_id, username="nuevo", display_name="Nuevo", role="cashier", secret=pin
            )
    assert err.value.fields.get("secret")


def test_trivial_pin_patterns():
    assert all(trivial_pin(p) for p in ("000000", "999999", "012345", "987654", "676767", "456456"))
    assert not any(trivial_pin(p) for p in ("482915", "730614", "591372", "305718"))


async def test_duplicate_pins_are_refused_across_cashiers_and_supervisors(sqlite_db):
    st = await make_setup(sqlite_db)
    for secret, field in ((PIN, "secret"), (SUPERVISOR_PIN, "secret")):
        with pytest.raises(Conflict) as err:
            async with sqlite_db.session() as s:
                await users.create_user(
                    s, venue_id=st.venue_id, username="otra", display_name="Otra", role="cashier", secret=secret
                )
        assert err.value.code == "user.pin_taken" and field in err.value.fields
    with pytest.raises(Conflict):
        async with sqlite_db.session() as s:
            await users.update_user(s, st.venue_id, st.admin_id, actor_id=st.admin_id, authorization_pin=PIN)
    from caja_core.venues import service as venues

    async with sqlite_db.session() as s:  # another venue's PINs are not compared
        venue = await venues.create_venue(s, slug="otro", name="Otro local")
        await users.create_user(s, venue_id=venue.id, username="cajera", display_name="C", role="cashier", secret=PIN)


@pytest.mark.parametrize(
    "role,secret",
    [
        ("admin", "corta"),
        ("admin", "12345678"),
        ("admin", "1234567890"),
        ("supervisor", ""),
        ("supervisor", "aaaaaaaaaaaa"),
        ("supervisor", "nuevonuevo"),
        ("admin", "password123"),
    ],
)
async def test_weak_passwords_rejected(sqlite_db, role, secret):
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


async def test_changes_to_a_user_bump_the_credentials_version(sqlite_db):
    st = await make_setup(sqlite_db)

    async def version():
        async with sqlite_db.session() as s:
            return (await users.session_user(s, st.supervisor_id)).credentials_version

    first = await version()
    async with sqlite_db.session() as s:
        await users.update_user(s, st.venue_id, st.supervisor_id, actor_id=st.admin_id, display_name="Sofía")
    assert await version() == first  # a new display name ends no session
    async with sqlite_db.session() as s:
        await users.update_user(s, st.venue_id, st.supervisor_id, actor_id=st.admin_id, role="cashier", secret="305718")
    assert await version() == first + 1
    async with sqlite_db.session() as s:
        await users.update_user(s, st.venue_id, st.supervisor_id, actor_id=st.admin_id, active=False)
    assert await version() == first + 2
    async with sqlite_db.session() as s:
        await users.logout_everywhere(s, st.venue_id, st.supervisor_id, actor_id=st.admin_id)
    assert await version() == first + 3

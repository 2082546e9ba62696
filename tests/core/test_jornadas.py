from datetime import UTC, datetime

import pytest

from caja_core.clock import jornada_label
from caja_core.errors import Conflict
from caja_core.jornadas import service as jornadas
from caja_core.testing.factories import make_setup

from .conftest import open_session


def test_label_is_the_night_it_started_in_the_venue_zone():
    # 23:30 in Santiago on 14 March (UTC−3) and 01:30 the next morning are the same night.
    assert str(jornada_label(datetime(2026, 3, 15, 2, 30, tzinfo=UTC), "America/Santiago")) == "2026-03-14"
    assert str(jornada_label(datetime(2026, 3, 15, 4, 30, tzinfo=UTC), "America/Santiago")) == "2026-03-14"
    # 20:00 local on 14 March: same label; in UTC that instant is already 15 March.
    assert str(jornada_label(datetime(2026, 3, 14, 23, 0, tzinfo=UTC), "America/Santiago")) == "2026-03-14"


async def test_open_close_and_one_open_per_venue(any_db):
    st = await make_setup(any_db, open_jornada=False)
    async with any_db.session() as s:
        j = await jornadas.open_jornada(
            s, venue_id=st.venue_id, user_id=st.supervisor_id, now=datetime(2026, 11, 28, 3, 15, tzinfo=UTC)
        )
    assert j.status == "open" and str(j.label_date) == "2026-11-27"
    with pytest.raises(Conflict) as err:
        async with any_db.session() as s:
            await jornadas.open_jornada(s, venue_id=st.venue_id, user_id=st.supervisor_id)
    assert err.value.code == "jornada.already_open"
    async with any_db.session() as s:
        closed = await jornadas.close_jornada(s, venue_id=st.venue_id, jornada_id=j.id, user_id=st.supervisor_id)
    assert closed.status == "closed"
    async with any_db.session() as s:
        assert await jornadas.current_jornada(s, st.venue_id) is None


async def test_cannot_close_with_sessions_open(any_db):
    st = await make_setup(any_db)
    await open_session(any_db, st)
    with pytest.raises(Conflict) as err:
        async with any_db.session() as s:
            await jornadas.close_jornada(s, venue_id=st.venue_id, jornada_id=st.jornada_id, user_id=st.supervisor_id)
    assert err.value.code == "jornada.sessions_open" and "CAJA1" in err.value.message


async def test_opening_again_the_same_night_reopens_its_jornada(any_db):
    """Closed too early and opened again the same night: one jornada for that date, open again."""
    st = await make_setup(any_db, open_jornada=False)
    night = datetime(2026, 11, 28, 3, 15, tzinfo=UTC)
    async with any_db.session() as s:
        first = await jornadas.open_jornada(s, venue_id=st.venue_id, user_id=st.supervisor_id, now=night)
    async with any_db.session() as s:
        await jornadas.close_jornada(s, venue_id=st.venue_id, jornada_id=first.id, user_id=st.supervisor_id)
    async with any_db.session() as s:
        again = await jornadas.open_jornada(
            s, venue_id=st.venue_id, user_id=st.supervisor_id, now=datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
        )
    assert again.id == first.id and again.status == "open" and again.closed_at is None
    async with any_db.session() as s:
        listed = await jornadas.list_jornadas(s, st.venue_id)
        assert [j.label for j in listed] == ["27-11-2026"]
        await jornadas.close_jornada(s, venue_id=st.venue_id, jornada_id=again.id, user_id=st.supervisor_id)
    async with any_db.session() as s:  # the next night is a new jornada
        nxt = await jornadas.open_jornada(
            s, venue_id=st.venue_id, user_id=st.supervisor_id, now=datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
        )
    assert nxt.id != first.id and str(nxt.label_date) == "2026-11-28"

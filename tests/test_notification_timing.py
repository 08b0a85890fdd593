"""When a push goes out, judged at send time against the resident's settings of that moment: quiet hours in the
resident's own time zone (the same instant is quiet in Shanghai and not in London; a deferred push goes out when
the window ends, never dropped; windows wrapping midnight; the live stream and non-quiet triggers not held back),
the daily cap per local day (a message to two phones counts once, uncapped triggers still go, the next local day
starts again), a trigger turned off, and a message read before its push went out. `quiet_now` and
`next_quiet_end` are checked as pure functions with Hypothesis, across daylight-saving changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from notifications.delivery.send import next_quiet_end, quiet_now
from tests.notification_support import (
    Providers,
    daytime_zone,
    deliveries,
    phone,
    providers,
    push_of,
    settle_leftovers,
    tell,
    tomorrow_at,
)
from tests.support import Resident, assert_problem, register

NEW_YORK = ZoneInfo("America/New_York")
ZONES = [ZoneInfo(z) for z in ("Asia/Shanghai", "Europe/London", "America/New_York", "Asia/Kathmandu",
                                "Australia/Lord_Howe", "America/St_Johns")]
BADGE = {"badge": "第一次骑行", "badge_en": "First ride"}


@pytest.fixture
async def fakes(db: object) -> AsyncIterator[Providers]:
    await settle_leftovers()
    async with providers() as p:
        yield p


def settings(resident: Resident, **body: object) -> dict[str, object]:
    r = resident.patch("/v1/me/notification-settings", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# --- quiet hours, pure --------------------------------------------------------------------------------------

minutes = st.integers(0, 1439)


@given(minutes, minutes, minutes)
def test_quiet_now_is_exactly_the_minutes_from_start_up_to_end_wrapping_midnight(start: int, end: int,
                                                                                 now: int) -> None:
    assume(start != end)
    window = {(start + k) % 1440 for k in range((end - start) % 1440)}
    local = datetime(2026, 5, 1, now // 60, now % 60, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert quiet_now(start, end, local) == (now in window)
    assert quiet_now(None, None, local) is False


def _single(zone: ZoneInfo, wall: datetime) -> bool:
    """Whether a wall-clock time happens exactly once in the zone (not skipped, not repeated by DST)."""
    once = wall.replace(tzinfo=zone, fold=0)
    return (once.astimezone(UTC) == wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
            and once.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall)


@given(st.sampled_from(ZONES), st.integers(0, 2 * 366 * 86_400), minutes)
def test_the_quiet_end_is_the_next_time_the_local_clock_reads_end(zone: ZoneInfo, offset_s: int, end: int) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=offset_s)
    local = now.astimezone(zone)
    day = local.date()
    walls = [datetime.combine(day + timedelta(days=d), time(end // 60, end % 60)) for d in (-1, 0, 1)]
    assume(_single(zone, local.replace(tzinfo=None)) and all(_single(zone, w) for w in walls))

    at = next_quiet_end(end, local)

    assert at.tzinfo is not None and now < at <= now + timedelta(hours=25)
    reading = at.astimezone(zone)
    assert (reading.hour, reading.minute, reading.second) == (end // 60, end % 60, 0)
    earlier = datetime.combine(reading.date() - timedelta(days=1), time(end // 60, end % 60), tzinfo=zone)
    assert earlier.astimezone(UTC) <= now  # the next one, not the one after it


@pytest.mark.parametrize(("night", "hours"), [(date(2026, 3, 7), 7), (date(2026, 10, 31), 9)])
def test_a_quiet_night_across_a_dst_change_ends_at_the_local_time_not_after_a_fixed_span(night: date,
                                                                                        hours: int) -> None:
    """New York, 23:00 to 07:00: the night the clocks go forward lasts 7 hours, the night they go back 9."""
    start = datetime.combine(night, time(23, 0), tzinfo=NEW_YORK)
    at = next_quiet_end(7 * 60, start)
    assert at - start == timedelta(hours=hours)
    assert at.astimezone(NEW_YORK).time() == time(7, 0)


def test_a_quiet_end_in_the_repeated_hour_of_a_dst_fall_back_is_still_in_the_future() -> None:
    now = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST, the second time the clock reads 01:30
    local = now.astimezone(NEW_YORK)
    assert next_quiet_end(1 * 60 + 45, local) > now  # quiet until 01:45: 01:45 EST, 15 minutes ahead


def test_a_quiet_end_skipped_by_a_dst_spring_forward_ends_when_the_clock_jumps_past_it() -> None:
    local = datetime(2026, 3, 8, 6, 50, tzinfo=UTC).astimezone(NEW_YORK)  # 01:50 EST; 02:00 becomes 03:00 EDT
    at = next_quiet_end(2 * 60 + 30, local)
    assert not quiet_now(22 * 60, 2 * 60 + 30, datetime(2026, 3, 8, 7, 0, tzinfo=UTC).astimezone(NEW_YORK))
    assert at == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT: the window is over from then on


# --- quiet hours, delivered -----------------------------------------------------------------------------


async def test_the_same_instant_is_quiet_in_shanghai_and_not_in_london_and_the_deferred_push_goes_out_at_the_end(
        client: httpx.Client, fakes: Providers) -> None:
    shanghai, london = register(client), register(client, language="en")
    r = london.patch("/v1/me", json={"time_zone": "Europe/London"})
    assert r.status_code == 200 and r.json()["time_zone"] == "Europe/London", r.text
    for resident in (shanghai, london):
        settings(resident, quiet_hours={"start": "21:00", "end": "23:00"})
    (sh_phone, sh_token), (ldn_phone, ldn_token) = phone(shanghai), phone(london)
    at = tomorrow_at(14)  # 22:00 in Shanghai; 14:00 or 15:00 in London
    sh_msg, ldn_msg = [await tell(r.holder_id, "badge_earned", BADGE) for r in (shanghai, london)]
    account = await tell(shanghai.holder_id, "password_changed")  # security is never held back

    await fakes.sender().step(now=at)

    held = await push_of(sh_msg, sh_phone)
    assert (held["state"], held["reason"], held["attempts"]) == ("pending", "quiet-hours", 0)  # not an attempt
    assert held["due_at"] == at + timedelta(hours=1)  # 23:00 in Shanghai
    assert (await deliveries(sh_msg))["live"]["state"] == "sent"  # the open app is told at once
    assert (await push_of(account, sh_phone))["state"] == "sent"
    assert (await push_of(ldn_msg, ldn_phone))["state"] == "sent" and len(fakes.google.to(ldn_token)) == 1
    assert len(fakes.google.to(sh_token)) == 1  # only the account message

    await fakes.sender().step(now=at + timedelta(minutes=59, seconds=59))
    assert (await push_of(sh_msg, sh_phone))["state"] == "pending"
    await fakes.sender().step(now=held["due_at"])

    sent = await push_of(sh_msg, sh_phone)
    assert (sent["state"], sent["attempts"]) == ("sent", 1)
    assert [m["data"]["kind"] for m in fakes.google.to(sh_token)] == ["password_changed", "badge_earned"]


async def test_a_window_wrapping_midnight_defers_from_both_sides_of_midnight_to_the_next_morning(
        client: httpx.Client, fakes: Providers) -> None:
    late, early = register(client), register(client)  # both in Shanghai, quiet 22:00 to 07:00
    for resident in (late, early):
        settings(resident, quiet_hours={"start": "22:00", "end": "07:00"})
    (late_phone, _), (early_phone, _) = phone(late), phone(early)
    evening, night = tomorrow_at(14, 30), tomorrow_at(18, 30)  # 22:30 and 02:30 (the next day) in Shanghai
    morning = tomorrow_at(23)  # 07:00 in Shanghai

    late_msg = await tell(late.holder_id, "badge_earned", BADGE)
    await fakes.sender().step(now=evening)
    early_msg = await tell(early.holder_id, "badge_earned", BADGE)
    await fakes.sender().step(now=night)

    assert (await push_of(late_msg, late_phone))["due_at"] == morning
    assert (await push_of(early_msg, early_phone))["due_at"] == morning
    await fakes.sender().step(now=morning - timedelta(seconds=1))
    assert (await push_of(late_msg, late_phone))["state"] == "pending"
    await fakes.sender().step(now=morning)
    assert [(await push_of(m, p))["state"] for m, p in ((late_msg, late_phone), (early_msg, early_phone))] == [
        "sent", "sent"]


async def test_quiet_hours_changed_while_a_push_waits_are_judged_again_at_send_time(
        client: httpx.Client, fakes: Providers) -> None:
    resident = register(client)
    settings(resident, quiet_hours={"start": "21:00", "end": "23:00"})
    device, _ = phone(resident)
    message = await tell(resident.holder_id, "badge_earned", BADGE)
    at = tomorrow_at(14)
    await fakes.sender().step(now=at)
    settings(resident, quiet_hours={"start": "21:00", "end": "23:30"})  # longer now

    await fakes.sender().step(now=at + timedelta(hours=1))

    deferred = await push_of(message, device)
    assert (deferred["state"], deferred["due_at"]) == ("pending", at + timedelta(minutes=90))


# --- the daily cap --------------------------------------------------------------------------------------


async def test_the_daily_cap_skips_capped_pushes_beyond_it_counts_a_message_once_and_resets_the_next_local_day(
        client: httpx.Client, fakes: Providers) -> None:
    zone = daytime_zone()
    resident = register(client, time_zone=zone)
    assert settings(resident, daily_cap=2)["daily_cap"] == 2
    (a, _), (b, _) = phone(resident), phone(resident, "apns")  # each message goes to both phones
    capped = [await tell(resident.holder_id, "badge_earned", BADGE) for _ in range(3)]
    uncapped = await tell(resident.holder_id, "activity_held", {"activity_id": "a-1"})

    await fakes.sender().step()

    states = [{(await push_of(m, d))["state"] for d in (a, b)} for m in capped]
    assert states == [{"sent"}, {"sent"}, {"skipped"}]
    assert {(await push_of(capped[2], d))["reason"] for d in (a, b)} == {"daily-cap"}
    assert {(await push_of(uncapped, d))["state"] for d in (a, b)} == {"sent"}
    assert (await deliveries(capped[2]))["live"]["state"] == "sent"  # the cap limits pushes only

    later_today = await tell(resident.holder_id, "level_up", {"level": "幼苗", "level_en": "Seedling"})
    await fakes.sender().step()
    assert {(await push_of(later_today, d))["reason"] for d in (a, b)} == {"daily-cap"}

    tomorrow = await tell(resident.holder_id, "badge_earned", BADGE)
    local = datetime.now(ZoneInfo(zone))
    next_morning = datetime.combine(local.date() + timedelta(days=1), time(8), tzinfo=ZoneInfo(zone))
    await fakes.sender().step(now=next_morning.astimezone(UTC))
    assert {(await push_of(tomorrow, d))["state"] for d in (a, b)} == {"sent"}


# --- turned off, already read ---------------------------------------------------------------------------


async def test_a_push_turned_off_before_it_went_out_is_skipped_and_the_live_event_still_goes(
        client: httpx.Client, fakes: Providers) -> None:
    resident = register(client)
    device, token = phone(resident)
    planned = await tell(resident.holder_id, "badge_earned", BADGE)
    triggers = settings(resident, triggers={"badge_earned": {"push": False}})["triggers"]
    assert next(t for t in triggers if t["trigger"] == "badge_earned")["push"] is False

    await fakes.sender().step()

    assert (await push_of(planned, device))["reason"] == "turned-off"
    assert (await push_of(planned, device))["state"] == "skipped"
    assert (await deliveries(planned))["live"]["state"] == "sent"
    after = await tell(resident.holder_id, "badge_earned", BADGE)
    assert set(await deliveries(after)) == {"live"}  # not even planned any more
    assert fakes.google.to(token) == []
    assert_problem(resident.patch("/v1/me/notification-settings", json={"triggers": {"account": {"push": False}}}),
                   422, "locked-trigger")
    settings(resident, triggers={"account": {"live": False}})  # the locked part is push only
    account = await tell(resident.holder_id, "password_changed")
    await fakes.sender().step()
    assert set(await deliveries(account)) == {f"push:{device}"}
    assert (await push_of(account, device))["state"] == "sent"


async def test_a_message_read_before_its_push_went_out_even_while_deferred_is_not_pushed(
        client: httpx.Client, fakes: Providers) -> None:
    resident = register(client)
    device, token = phone(resident)
    message = await tell(resident.holder_id, "badge_earned", BADGE)
    r = resident.post(f"/v1/me/inbox/{message}/read")
    assert r.status_code == 204, r.text

    await fakes.sender().step()

    skipped = await push_of(message, device)
    assert (skipped["state"], skipped["reason"]) == ("skipped", "already-read")
    assert (await deliveries(message))["live"]["state"] == "sent"
    assert fakes.google.to(token) == []

    settings(resident, quiet_hours={"start": "21:00", "end": "23:00"})
    waiting = await tell(resident.holder_id, "badge_earned", BADGE)
    at = tomorrow_at(14)  # 22:00 in Shanghai
    await fakes.sender().step(now=at)
    assert (await push_of(waiting, device))["state"] == "pending"
    assert resident.post(f"/v1/me/inbox/{waiting}/read").status_code == 204  # read on another screen meanwhile
    await fakes.sender().step(now=at + timedelta(hours=1))
    assert (await push_of(waiting, device))["reason"] == "already-read"
    assert fakes.google.to(token) == []

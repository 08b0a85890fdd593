"""Helpers for the leaderboard tests: residents placed where they compete (made without argon2, each with a
bearer token for HTTP reads), credits of chosen size and time through a verified partner, the follower and
rebuild on the pytest loop, and a snapshot of every current board key (type, contents, expiry) to compare
what following the book built with what a rebuild builds."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from redis.asyncio import Redis

from gamification.leaderboards.boards import current_periods
from gamification.leaderboards.follow import follow, rebuild
from gamification.leaderboards.store import SEATS
from tests.ledger_support import access_tokens, bearer, grower_partner, registration_template, source_for
from tests.support import Resident, deliver_pending_events
from wallet.db import connection
from wallet.holders.service import Registration, insert_holder
from wallet.intake.judge import Receipt, record_reports
from wallet.intake.reports import Report, Source
from wallet.methodology.catalogue import current_version, reduction_mg

TZ = ZoneInfo("Asia/Shanghai")
GROWER = "clothes_recycling"  # verified tier, 1,280 mg per gram handed in


def mg_of(quantity: int, behaviour: str = GROWER) -> int:
    """What one credited report of `quantity` adds to the book (the catalogue's factor, rounded down)."""
    return reduction_mg(current_version(behaviour), quantity)


def tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Player:
    id: uuid.UUID
    nickname: str
    source: Source
    http: Resident

    @property
    def sid(self) -> str:
        return str(self.id)

    async def credit(self, quantity: int, *, occurred: datetime | None = None,
                     now: datetime | None = None) -> Receipt:
        """One report through the verified partner; returns its receipt (asserting it was credited)."""
        (receipt,) = await self.report(quantity, occurred=occurred, now=now)
        assert receipt.verdict == "credited", receipt
        return receipt

    async def report(self, quantity: int, *, occurred: datetime | None = None,
                     now: datetime | None = None) -> list[Receipt]:
        occurred = occurred or datetime.now(UTC) - timedelta(minutes=5)
        return await record_reports(self.source, [Report(f"lb-{uuid.uuid4().hex}", GROWER, quantity, occurred)],
                                    now=now)

    def board(self, board: str, period: str = "all", **params: Any) -> dict[str, Any]:
        r = self.http.get(f"/v1/me/leaderboards/{board}/{period}", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def friends(self, period: str = "all") -> dict[str, Any]:
        r = self.http.get(f"/v1/me/leaderboards/friends/{period}")
        assert r.status_code == 200, r.text
        return r.json()


@dataclass
class Arena:
    """What a module's scenarios share: a pre-hashed registration, a verified partner, the token issuer, the
    HTTP client, and this loop's Redis client."""

    template: Registration
    partner: dict[str, Any]
    tokens: Any
    client: httpx.Client
    redis: Redis

    async def player(self, *, city: str | None = None, district: str | None = None,
                     community: str | None = None, public: bool = True, nickname: str | None = None,
                     avatar_url: str | None = None, created_days_ago: int | None = None) -> Player:
        """A resident placed at creation (plain SQL, before they have any entry: nothing to move yet)."""
        nickname = nickname or f"lb-{tag()}"
        holder = dataclasses.replace(self.template, holder_id=uuid.uuid4(), email=f"{nickname}@example.com",
                                     nickname=nickname)
        holder_id = (await insert_holder(holder))["id"]
        async with connection() as conn:
            await conn.execute(
                """UPDATE holder SET city = $2, district = $3, community = $4, show_on_public_leaderboards = $5,
                          avatar_url = $6,
                          created_at = CASE WHEN $7::int IS NULL THEN created_at
                                            ELSE now() - make_interval(days => $7::int) END
                   WHERE id = $1""",
                holder_id, city, district, community, public, avatar_url, created_days_ago)
        headers = await bearer(self.tokens, holder_id)
        token = headers["Authorization"].removeprefix("Bearer ")
        http = Resident(self.client, holder.email or "", "", str(holder_id), "", token, "")
        return Player(holder_id, nickname, await source_for(holder_id, self.partner), http)


async def make_arena(passwords: Any, settings: Any, client: httpx.Client, redis: Redis) -> Arena:
    return Arena(await registration_template(passwords), await grower_partner(settings), access_tokens(settings),
                 client, redis)


def public(client: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    """A public board, e.g. `public(client, "city/all", scope_id="北京市")`."""
    r = client.get(f"/v1/leaderboards/{path}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def names(body: dict[str, Any]) -> list[str]:
    return [row["nickname"] for row in body["top"]]


def create_team(operator: Resident) -> dict[str, Any]:
    """A company with an engineering and a marketing department, through the admin API."""
    r = operator.post("/v1/admin/teams", json={
        "code": f"lb-{tag()}", "kind": "company", "name_zh": f"绿队{tag()}", "name_en": "Green Team",
        "departments": [{"code": "engineering", "name_zh": "研发部", "name_en": "Engineering"},
                        {"code": "marketing", "name_zh": "市场部", "name_en": "Marketing"}]})
    assert r.status_code == 201, r.text
    return r.json()


def join(p: Player, team: dict[str, Any], department: str | None = None) -> None:
    body = {"join_code": team["join_code"]} | ({"department_code": department} if department else {})
    r = p.http.client.put("/v1/me/team", json=body, headers=p.http.headers)
    assert r.status_code == 200, r.text


def department_id(team: dict[str, Any], code: str) -> str:
    return str(next(d["id"] for d in team["departments"] if d["code"] == code))


async def step(redis: Redis) -> int:
    """One follower step, as the worker's cron runs it; it must not find the lock taken in tests."""
    applied = await follow(redis, TZ)
    assert applied is not None, "the follower found no cursor or a held lock"
    return applied


async def settle(redis: Redis) -> None:
    """Moves first (their events), then the book: the order in which the boards end up right."""
    await deliver_pending_events()
    await step(redis)


async def fresh_start(redis: Redis) -> None:
    """Everything earlier tests left pending is delivered and the boards are rebuilt from the book, so
    whatever diverges afterwards comes from the test at hand."""
    await deliver_pending_events()
    await rebuild(redis, TZ)


# --- snapshots ---------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _contents(redis: Redis, key: str, kind: str) -> Any:
    if kind == "zset":
        return [(_text(m), s) for m, s in await redis.zrange(key, 0, -1, withscores=True)]
    if kind == "hash":
        return {_text(k): _text(v) for k, v in (await redis.hgetall(key)).items()}
    if kind == "set":
        return sorted(_text(m) for m in await redis.smembers(key))
    return _text(await redis.get(key))


async def snapshot(redis: Redis, *, now: datetime | None = None) -> dict[str, tuple[str, Any, int]]:
    """Every board key of the current periods (resident boards, their totals, per-capita boards, their totals
    and active sets) and the seats of residents who have book entries: key → (type, contents, expire-at).
    The cursor, the lock and a rebuild's temporary keys are left out; so are boards of finished periods
    (a rebuild recreates the current ones only) and seats of residents with no entry (nothing to rebuild)."""
    current = {p.key for p in current_periods(TZ, now)}
    out: dict[str, tuple[str, Any, int]] = {}
    async for raw in redis.scan_iter(match="lb*", count=1000):
        key = _text(raw)
        if key in ("lb:cursor", "lb:lock") or key.startswith("lbtmp"):
            continue
        if key != SEATS and not current & set(key.split(":")):
            continue
        kind = _text(await redis.type(key))
        out[key] = (kind, await _contents(redis, key, kind), int(await redis.execute_command("EXPIRETIME", key)))
    if SEATS in out:
        kind, seats, expire = out[SEATS]
        async with connection() as conn:
            booked = {str(r["holder"]) for r in await conn.fetch(
                "SELECT DISTINCT holder FROM book_entry WHERE holder = ANY($1::uuid[])",
                [uuid.UUID(h) for h in seats])}
        out[SEATS] = (kind, {h: s for h, s in seats.items() if h in booked}, expire)
    return out


def differences(left: dict[str, Any], right: dict[str, Any], limit: int = 8) -> list[str]:
    """A readable account of how two snapshots differ (empty when equal)."""
    out = [f"only before: {k} {left[k]}" for k in sorted(set(left) - set(right))]
    out += [f"only after: {k} {right[k]}" for k in sorted(set(right) - set(left))]
    for key in sorted(set(left) & set(right)):
        if left[key] != right[key]:
            a, b = left[key], right[key]
            if isinstance(a[1], dict) and isinstance(b[1], dict):
                fields = sorted(f for f in set(a[1]) | set(b[1]) if a[1].get(f) != b[1].get(f))
                out.append(f"{key}: " + ", ".join(f"{f}: {a[1].get(f)} != {b[1].get(f)}" for f in fields[:4]))
            else:
                out.append(f"{key}: {a} != {b}")
    return out[:limit]


async def wiped_and_rebuilt(redis: Redis) -> dict[str, tuple[str, Any, int]]:
    """FLUSH the Redis database, rebuild every board from PostgreSQL, and snapshot the result."""
    await redis.flushdb()
    await rebuild(redis, TZ)
    return await snapshot(redis)


async def assert_boards_equal_rebuild(redis: Redis) -> dict[str, tuple[str, Any, int]]:
    """The boards as they are now (built by following the book) equal the boards a rebuild makes from
    nothing. Returns the snapshot."""
    built = await snapshot(redis)
    rebuilt = await wiped_and_rebuilt(redis)
    assert built == rebuilt, differences(built, rebuilt)
    return built


async def hget_mg(redis: Redis, key: str, holder: uuid.UUID | str) -> int | None:
    """A resident's exact total on one board (None when they are not on it)."""
    raw = await redis.hget(key + ":v", str(holder))
    return None if raw is None else int(_text(raw).split(":")[0])

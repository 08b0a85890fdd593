"""What a challenge counts, and the follower that keeps its progress: each participant's amount (in the goal
kind's smallest unit: mg, energy or actions) and each challenge's progress and participants live in PostgreSQL,
counted through the snapshot in `challenge_cursor`; a step counts the entries that became visible since, in one
statement, and records the result of every challenge whose window has closed, in the same transaction.

Joining and leaving hold the cursor shared while they count a participant in or out, a step holds it
exclusively, so every entry is counted once for every participant: at joining (what the joining transaction's
snapshot sees, kept as `counted_through`) or by a step (the rest; a later snapshot sees all an earlier one
saw). A read costs index lookups however large the challenge or the book."""

from __future__ import annotations

import asyncpg

from wallet.book.snapshots import COMMITTED_BETWEEN

__all__ = ["STEP", "amount", "counts", "cursor", "whole"]


def amount(e: str) -> str:
    """An entry's amount for the challenge `c` it counts in (a reversal counts its negative)."""
    return (f"CASE c.goal_kind WHEN 'grams' THEN {e}.reduction_mg WHEN 'energy' THEN {e}.energy "
            f"ELSE CASE {e}.kind WHEN 'credit' THEN 1 WHEN 'reversal' THEN -1 ELSE 0 END END")


def counts(e: str) -> str:
    """Whether entry `e` is inside challenge `c`'s window and behaviours."""
    return (f"{e}.occurred_at >= c.starts_at AND {e}.occurred_at < c.ends_at "
            f"AND (jsonb_array_length(c.behaviours) = 0 OR c.behaviours ? {e}.behaviour)")


def whole(kind: str, amount: str) -> str:
    """Whole units of the goal kind (grams from mg, floored), as shown and as progress sums them."""
    return f"(CASE {kind} WHEN 'grams' THEN floor(({amount})::numeric / 1000)::bigint ELSE ({amount}) END)"


# $1 the cursor's snapshot, $2 the step's: the entries visible in $2 but not in $1, added to the participants of
# running challenges they count in, unless joining already counted them; each challenge's progress moves by its
# participants' change in whole units.
STEP = f"""
WITH new AS (
  SELECT e.txid, e.holder, e.behaviour, e.occurred_at, e.kind, e.reduction_mg, e.energy FROM book_entry e
  WHERE {COMMITTED_BETWEEN}),
added AS (
  SELECT p.challenge, p.holder, c.goal_kind, sum({amount('n')}) AS d
  FROM new n JOIN challenge_participant p ON p.holder = n.holder JOIN challenge c ON c.id = p.challenge
  WHERE c.result IS NULL AND {counts('n')}
    AND (p.counted_through IS NULL OR NOT pg_visible_in_snapshot(n.txid, p.counted_through::pg_snapshot))
  GROUP BY p.challenge, p.holder, c.goal_kind),
moved AS (
  UPDATE challenge_participant p SET amount = p.amount + a.d FROM added a
  WHERE p.challenge = a.challenge AND p.holder = a.holder AND a.d <> 0
  RETURNING p.challenge, {whole('a.goal_kind', 'p.amount')} - {whole('a.goal_kind', 'p.amount - a.d')} AS d),
progressed AS (
  UPDATE challenge c SET progress = c.progress + s.d
  FROM (SELECT challenge, sum(d) AS d FROM moved GROUP BY challenge) s WHERE c.id = s.challenge RETURNING c.id)
SELECT (SELECT count(*) FROM new) AS entries, (SELECT count(*) FROM moved) AS participants,
       (SELECT count(*) FROM progressed) AS challenges"""  # noqa: S608 - constant fragments


async def cursor(conn: asyncpg.Connection, *, exclusive: bool, wait: bool = True) -> str | None:
    """The cursor's snapshot, locked shared (joining, leaving) or exclusively (a step); None when `wait` is
    false and another step holds it."""
    lock = "FOR UPDATE" if exclusive else "FOR SHARE"
    return await conn.fetchval(
        f"SELECT snapshot FROM challenge_cursor WHERE id = 1 {lock}{'' if wait else ' SKIP LOCKED'}")  # noqa: S608

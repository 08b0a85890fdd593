"""Following the book by PostgreSQL snapshots: the entries committed after one snapshot and by another.

Every follower (leaderboards, badges, challenges, community aggregates, the `overtaken` reminder) keeps the
snapshot it has counted to and takes, each step, the entries of transactions visible in a new snapshot but not
in that one. An id cursor would skip a slow transaction that commits after a later one; snapshots cannot."""

from __future__ import annotations

__all__ = ["COMMITTED_BETWEEN"]

# For `book_entry e`, with the counted snapshot as $1 and the new one as $2 (text); the first condition lets the
# `book_entry_txid` index skip everything older than the counted snapshot's oldest transaction.
COMMITTED_BETWEEN = """e.txid >= pg_snapshot_xmin($1::text::pg_snapshot)
  AND NOT pg_visible_in_snapshot(e.txid, $1::text::pg_snapshot)
  AND pg_visible_in_snapshot(e.txid, $2::text::pg_snapshot)"""

"""Gamification: leaderboards (Redis, rebuildable from PostgreSQL), badges, streaks, levels, friends and
challenges. It learns what happened in `wallet` only through domain events (see `wallet.outbox`)."""

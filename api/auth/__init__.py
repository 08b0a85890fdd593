"""Resident authentication: access JWTs, rotating refresh tokens, per-device sessions, rate limits."""

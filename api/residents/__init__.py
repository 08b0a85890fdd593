"""Resident-facing endpoints: registration, login, sessions, profile, password, export and deletion."""

"""Local running: embedded PostgreSQL and Valkey when no servers are configured, and the `make run`
supervisor that starts and stops everything together."""

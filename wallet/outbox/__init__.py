"""The transactional outbox: events recorded with the change that caused them, relayed to workers,
handled at most once per (event, handler) thanks to a unique key written with the handler's effect."""

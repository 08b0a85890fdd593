"""The operators' review queue for activities held as suspicious."""

"""The partner-facing edge: partner API, signed pushes, and the operators' partner admin API."""

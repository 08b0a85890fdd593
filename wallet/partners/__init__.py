"""Partner platforms: the registered OAuth clients that report residents' green actions."""

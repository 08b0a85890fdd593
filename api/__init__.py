"""The edge of Carbon Wallet: HTTP API, auth, CLI and worker wiring. Domain packages never import it."""

"""Holders: residents with a wallet, their login identity and profile, pseudonymised on deletion."""

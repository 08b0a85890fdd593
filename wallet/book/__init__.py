"""The carbon book: each holder's append-only, hash-chained entries of CO2e they avoided."""

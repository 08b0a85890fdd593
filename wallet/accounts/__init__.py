"""The 1 + N accounts: a holder's primary account and its sub-accounts (one per linked partner, one self)."""

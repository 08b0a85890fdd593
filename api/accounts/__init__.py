"""The resident's view of their 1 + N accounts: linked partners, unlinking, consent history."""

"""Carbon accounting: holders and their 1+N accounts, the carbon book, the energy ledger, the outbox."""

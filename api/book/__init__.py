"""The resident's carbon book: totals, charts, entries, verdicts, verification, export and self-reports."""

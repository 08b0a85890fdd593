"""The public methodology catalogue: what each behaviour code means."""

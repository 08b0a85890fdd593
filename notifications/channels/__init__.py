"""Push channels: FCM (Android), APNs (iOS) and a log channel for local runs, behind one `Channel` interface.

A channel sends one push and says what happened (`Sent`); it never retries on its own beyond one credential
refresh, so the delivery jobs alone decide backoff, dead letters and pruning of invalid device tokens.
"""

"""Notifications: a holder's inbox (and later devices, push channels and preferences), fed by domain events."""

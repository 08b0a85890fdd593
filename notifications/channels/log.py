"""A channel that only writes a log line: local runs and demos show every push without a provider account."""

from __future__ import annotations

import logging

from notifications.channels.base import Push, Sent

__all__ = ["TOKEN_TAIL_CHARS", "LogChannel"]

log = logging.getLogger("notifications.push")

TOKEN_TAIL_CHARS = 6  # enough to tell a resident's devices apart, too little to push to one


class LogChannel:
    """Logs one structured line per push (JSON-able fields in `extra`) and reports it sent."""

    name = "log"

    async def send(self, push: Push) -> Sent:
        log.info("push", extra={
            "channel": self.name,
            "token_tail": push.token[-TOKEN_TAIL_CHARS:],
            "title": push.title,
            "body": push.body,
            "deep_link": push.deep_link,
            "data": dict(push.data),
            "collapse_key": push.collapse_key,
            "badge": push.badge,
            "ttl_s": push.ttl_s,
            "message_id": push.message_id,
        })
        return Sent("sent", provider_id=push.message_id)

    async def aclose(self) -> None:
        """Nothing to release; present because every channel has it."""

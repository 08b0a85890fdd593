"""The inbox: one message per (holder, event, kind), rendered from templates in the reader's language."""

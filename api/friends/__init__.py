"""A resident's friends: invite codes, requests, blocks."""

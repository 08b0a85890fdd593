"""The OAuth 2 authorization server that lets partner platforms act for residents who linked them."""

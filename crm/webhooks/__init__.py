"""Signed outgoing webhooks that follow the committed change feed (see crm/webhooks/dispatch.py)."""

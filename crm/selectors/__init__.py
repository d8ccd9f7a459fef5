"""Reads for the pages (and anything else that wants them): querysets and aggregates, visibility applied first."""

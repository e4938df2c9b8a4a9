"""Simulator fixtures (owned by the fetcher work)."""

"""KLAP backup provider for caja."""

"""GETNET POS Integrado provider for caja."""

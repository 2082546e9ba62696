"""Backup phones: the registered devices with the backup provider's tap-on-phone app."""

"""The JSON API that ``caja agent`` (the register PC) talks to: ``/api/agent/v1/…``."""

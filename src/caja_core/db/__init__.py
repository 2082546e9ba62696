"""Persistence: declarative base, portable column types, engine and session factory."""

from .base import Base, JSONType, UTCDateTime
from .engine import Database, make_engine

__all__ = ["Base", "Database", "JSONType", "UTCDateTime", "make_engine"]

"""Operations: health, metrics, backups, structured logs, worker heartbeats and contingency mode."""

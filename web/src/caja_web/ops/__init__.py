"""Operations endpoints: /health, /health/live, /metrics, /metrics/prometheus and the admin backups page."""

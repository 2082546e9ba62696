"""Payment provider webhooks (``POST /webhooks/{provider_id}``)."""

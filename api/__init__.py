"""The service's entrypoints: the HTTP API, the NATS command subjects and the composition root."""

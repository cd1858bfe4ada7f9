"""I/O edges: JetStream event store, embedded nats-server, SQL engine, sandboxed code runner."""

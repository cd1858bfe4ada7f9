"""Read models: SQL tables built only from events, each with its own applied-sequence checkpoint."""

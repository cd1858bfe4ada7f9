"""The pure centre of jetflow: commands, events, states and the rules between them (no I/O)."""

"""The edges users touch: the Litestar HTTP API, the composition root and the command line."""

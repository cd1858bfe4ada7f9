"""Attack-review findings, each performed against the served system and seen refused."""

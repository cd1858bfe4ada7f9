"""Message-driven code: command handlers, projection runners and process managers."""

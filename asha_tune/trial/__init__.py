"""The trial: one configuration trained and evaluated (torch)."""

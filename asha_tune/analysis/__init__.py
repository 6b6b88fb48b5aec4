"""Records into answers."""

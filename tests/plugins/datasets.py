"""Dataset fixtures (owned by the trainer work)."""

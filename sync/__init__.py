"""radvis sync package."""

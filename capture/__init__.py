"""radvis capture package."""

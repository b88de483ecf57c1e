"""radvis drivers package."""

"""radvis learner package."""

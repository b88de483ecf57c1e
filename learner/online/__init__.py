"""Online learner: continuous self-supervised training on the live pair stream."""

"""The rig: above every stage. Supervisor (stages as processes), held-out set, evaluation, replay check, report."""

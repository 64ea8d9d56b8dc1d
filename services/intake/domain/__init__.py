"""Intake rules: the questionnaire and the screening policy (pure, no I/O)."""

"""Intake adapters: MongoDB repositories and the cipher for health answers."""

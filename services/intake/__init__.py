"""Intake: screens a client for contraindications before any treatment."""

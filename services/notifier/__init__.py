"""Notifier: the aftercare timeline after every session, and its delivery."""

"""Scheduler adapters: MongoDB repositories for sites, plans and room reservations."""

"""Scheduler: sites, treatment plans and bookings."""

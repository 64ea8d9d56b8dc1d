"""clinicflow's own library: event contracts, messaging, settings, health and metrics."""

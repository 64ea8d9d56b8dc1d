"""`clinicflow`, the ops command line (SPEC sections 6 and 9)."""

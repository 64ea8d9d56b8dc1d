"""Project tooling: the local infrastructure and stack runners."""

"""Which models exist and where they run."""

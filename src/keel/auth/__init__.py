"""Identity and access: projects, API keys, the bootstrap admin key."""

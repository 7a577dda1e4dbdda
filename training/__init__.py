"""Offline tooling that builds Keel's shipped artifacts (not part of the installed package)."""

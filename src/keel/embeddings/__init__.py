"""Embedding models: the bundled all-MiniLM-L6-v2, run in-process off the event loop."""

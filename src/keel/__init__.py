"""Keel: an LLMOps platform in one package, around an OpenAI-compatible gateway."""

__version__ = "0.1.0"

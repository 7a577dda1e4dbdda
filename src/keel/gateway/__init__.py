"""The request path: every caller of the gateway goes through it (docs/architecture.md)."""

"""The /v1 wire protocol: OpenAI-compatible schemas and handlers."""

"""The prompt registry: versioned prompts with movable labels, rendered in a sandbox.

`service` owns the tables, `render` the sandbox, `resolver` the gateway step and its cache.
"""

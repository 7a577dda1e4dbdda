"""`keel apply`: declare Keel's configuration in YAML files and apply it through the API.

Each top-level YAML key is a section with its own handler (`prompts:` today); everything
is validated, with file and line, before anything changes.
"""

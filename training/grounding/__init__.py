"""Train and measure the groundedness scorer; the runtime loads only its weights."""

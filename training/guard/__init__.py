"""Train and measure the guard's classifiers; the runtime guard loads only their artifacts."""

"""Durable long work: jobs split into items, leased and resumed, run by an executor."""

"""Routing: which target serves a request, and how failures are retried or fenced off.

Aliases, weighted and sticky splits, fallbacks, retry policies and circuit breakers.
"""

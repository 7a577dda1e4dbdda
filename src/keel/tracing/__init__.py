"""Tracing: one trace per gateway request, recorded off the hot path, queried over /api.

Also the Prometheus metrics derived from traces and the optional OTLP span export.
"""

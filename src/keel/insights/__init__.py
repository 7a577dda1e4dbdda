"""Insights: embeddings of traffic turned into topics, anomaly scores, drift alerts and
similar requests (docs/insights.md)."""

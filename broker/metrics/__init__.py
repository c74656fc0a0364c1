"""Prometheus metrics: what shards count, and the node-wide exposition the router serves."""

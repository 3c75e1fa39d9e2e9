"""Observability: run figures for Prometheus."""

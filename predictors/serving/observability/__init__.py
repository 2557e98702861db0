"""Observability: Prometheus metrics, prediction drift against the build's reference, and log
lines that carry the request. Below the model core, beside scheduling."""

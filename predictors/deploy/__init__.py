"""Kubernetes: sizing, rendering, the KServe merge emulation, and strict validation."""

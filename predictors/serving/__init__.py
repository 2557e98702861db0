"""Serving: the V2/V1/gRPC codec, chunking, the `kserve.Model` per model, and the kserve server
with honest readiness and a folder-backed model repository."""

"""Router ↔ shard communication: fd handoff over Unix sockets and a ZeroMQ control plane."""

"""Delta compression of publications (the fossil format both official SDKs decode)."""

"""Benchmarks: micro-benchmarks run by pytest, and whole-server benchmarks with their load generator."""

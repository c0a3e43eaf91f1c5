"""Benchmarks: scripts that print figures (tests run them on tiny settings, never time them)."""

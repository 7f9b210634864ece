"""Fuzzing of what flows and clients may send."""

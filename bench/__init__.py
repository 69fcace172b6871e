"""Benchmarks (not tests): `python -m bench` runs the store, drain and wire ones."""

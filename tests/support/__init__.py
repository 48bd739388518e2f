"""Helpers shared by the tests and the benchmark harness (real servers, not mocks)."""

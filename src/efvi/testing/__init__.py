"""Public testing helpers (trio's lesson): the adapter conformance suite and
network-namespace fixtures for integration tests."""

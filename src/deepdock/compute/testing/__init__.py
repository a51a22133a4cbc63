"""What tests of code above ``compute`` use: the in-memory ``FakeBackend`` (``testing.fake``), with every
ability and hooks to drive it, and the conformance suites every backend passes (``testing.conformance``).

Not imported by production code; it lives in the package so that other packages' tests (and a future
backend's) can use it without importing from ``tests/``.
"""

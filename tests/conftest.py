"""Fixtures shared across the test directories: real Redis servers (``tests/redis_servers.py``),
started only when a test asks for them."""

pytest_plugins = ["tests.redis_servers"]

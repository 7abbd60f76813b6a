"""Test support: the pytest plugin with private PostgreSQL and NATS server fixtures."""

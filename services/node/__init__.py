"""The composition root: the `timebank` command, the services wired into one process, and the private servers
(PostgreSQL, NATS) that the embedded node, the benchmarks and the tests start."""

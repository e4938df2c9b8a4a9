"""Local development tooling: RabbitMQ and PostgreSQL servers run from system binaries
(``servers``) and the pipeline's service processes (``processes``), for ``chouette services
up``, ``chouette demo``, the benchmarks and the tests. No service imports it."""

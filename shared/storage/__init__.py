"""A domain's PostgreSQL: the connection pool and the service's least-privileged role (`db`),
embedded servers (`embedded`), migrations (`migrations`) and the statements they share
(`column_schema`, `view_schema`, `write_schema`), materialized views at run time (`views`),
and sample and scale data (`sample_data`, `scale`)."""

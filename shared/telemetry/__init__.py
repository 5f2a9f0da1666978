"""What a service tells its operators: Prometheus metrics (`metrics`) and OpenTelemetry traces
(`tracing`). This layer imports only the modules at the top of shared/; the others record into
it."""

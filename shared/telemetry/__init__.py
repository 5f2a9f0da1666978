"""What a service tells its operators: metrics (`metrics.py`: the Prometheus families at
`GET /metrics`) and traces (`tracing.py`: OpenTelemetry spans of every request, from the mesh
through the domains down to their SQL, exported with OTLP when an endpoint is configured).
This layer imports only the modules at the top of `shared/`; every layer that serves or stores
may import it (docs/observability.md)."""

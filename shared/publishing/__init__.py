"""Publishing: a domain's output ports beyond its HTTP API (the lake: Parquet snapshots of
every product, with their manifests, in a local folder or an object store)."""

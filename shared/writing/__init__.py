"""A write, from request to response: the write routes of every writable table (`routes`,
with `batch` and `corrections`), the input models derived from the write declarations
(`inputs`), one transaction per request with its idempotency key (`transaction`,
`idempotency`), and the SQL of writes (`store`)."""

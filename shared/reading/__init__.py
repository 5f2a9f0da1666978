"""A read, from request to response: the routes of every product (`routes`), PostgREST's
grammar parsed against a declaration and compiled to SQL (`query`, `values`), the rows read
from the database (`rows`) or from an in-memory Arrow table (`tables`), the output formats
(`formats`) and the bounds on streamed reads (`streams`)."""

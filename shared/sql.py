"""SQL text from declarations: identifiers are only ever declared names, quoted."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """A declared identifier, double-quoted for SQL."""
    return '"' + name.replace('"', '""') + '"'

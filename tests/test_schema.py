"""The schema keeps the promises of the declarations: every declared sort has an index."""

from __future__ import annotations

import psycopg
import pytest

from services import DOMAINS, domain


@pytest.mark.parametrize("name", DOMAINS)
def test_every_sortable_table_column_leads_an_index(
    name: str, database_urls: dict[str, str]
) -> None:
    with psycopg.connect(database_urls[name]) as conn:
        indexed = {
            (table, column)
            for table, column in conn.execute(
                """
                SELECT t.relname, a.attname
                FROM pg_index i
                JOIN pg_class t ON t.oid = i.indrelid
                JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]
                JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
                """
            ).fetchall()
        }
    unindexed = [
        f"{product.source}.{column.name}"
        for product in domain(name).products
        if product.is_table
        for column in product.columns
        if column.sortable and (product.source, column.name) not in indexed
    ]
    assert unindexed == []

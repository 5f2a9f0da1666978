"""The schema keeps the promises of the declarations: every declared sort has an index (of a
table, or of a materialized view whose rows grow with the data)."""

from __future__ import annotations

import psycopg
import pytest

from services import DOMAINS, domain

# views whose rows grow with the data (one per customer, one per campaign); the others have a
# row per month, per catalogue product or per lead status: sorting them needs no index
GROWING_VIEWS = {"customer_lifetime_value", "campaign_performance"}


def indexed_columns(url: str) -> set[tuple[str, str]]:
    """(table or materialized view, column) for every index's leading column."""
    with psycopg.connect(url) as conn:
        return {
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


@pytest.mark.parametrize("name", DOMAINS)
def test_every_sortable_table_column_leads_an_index(
    name: str, database_urls: dict[str, str]
) -> None:
    indexed = indexed_columns(database_urls[name])
    unindexed = [
        f"{product.source}.{column.name}"
        for product in domain(name).products
        if product.is_table
        for column in product.columns
        if column.sortable and (product.source, column.name) not in indexed
    ]
    assert unindexed == []


@pytest.mark.parametrize("name", DOMAINS)
def test_every_view_has_a_key_index_and_growing_views_index_their_sorts(
    name: str, database_urls: dict[str, str]
) -> None:
    indexed = indexed_columns(database_urls[name])
    views = [p for p in domain(name).products if not p.is_table]
    assert [(v.source, v.key[0]) in indexed for v in views] == [True] * len(views)
    unindexed = [
        f"{view.source}.{column.name}"
        for view in views
        if view.source in GROWING_VIEWS
        for column in view.columns
        if column.sortable and (view.source, column.name) not in indexed
    ]
    assert unindexed == []


def test_the_growing_views_are_declared_views() -> None:
    views = {p.source for name in DOMAINS for p in domain(name).products if not p.is_table}
    assert views > GROWING_VIEWS  # and the others are small at any scale

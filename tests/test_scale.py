"""`datamesh seed --scale N`: the set-based generators on empty databases of their own, at a
small scale: exact row counts, totals that are sums of lines, converted leads that are
customers, and every declared quality check passing (warnings allowed, as `datamesh quality`)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import pytest

from services import DOMAINS, domain
from services.marketing import scale as marketing_scale
from services.sales import scale as sales_scale
from shared.governance.quality import Outcome, run_checks
from shared.settings import asyncpg_url
from shared.storage.sample_data import seed_if_empty
from tests.conftest import AS_OF, create_database, owner_url
from tests.postgres import PostgresServer

SCALE = 20
GENERATORS = {"sales": sales_scale.generate, "marketing": marketing_scale.generate}


def _dsn(url: str) -> str:
    return asyncpg_url(url).replace("postgresql+asyncpg", "postgresql")


@pytest.fixture(scope="module")
def seeded(postgres_servers: dict[str, PostgresServer]) -> dict[str, str]:
    """Each domain's empty migrated database, seeded at SCALE; the owners' URLs."""
    urls = {}
    for name in DOMAINS:
        owner = owner_url(create_database(postgres_servers, name, f"{name}_scale", {}))

        async def generate(conn: asyncpg.Connection, name: str = name) -> None:
            await GENERATORS[name](conn, SCALE, AS_OF)

        assert asyncio.run(seed_if_empty(domain(name), owner, generate))
        urls[name] = owner
    return urls


async def _fetch(url: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(_dsn(url))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


def _value(url: str, sql: str) -> Any:
    return asyncio.run(_fetch(url, sql))[0][0]


def test_row_counts_follow_the_scale(seeded: dict[str, str]) -> None:
    for table, expected in sales_scale.counts(SCALE).items():
        assert _value(seeded["sales"], f"SELECT count(*) FROM {table}") == expected, table
    counts = marketing_scale.counts(SCALE)
    url = seeded["marketing"]
    for table in ("campaigns", "leads", "website_traffic"):
        assert _value(url, f"SELECT count(*) FROM {table}") == counts[table], table
    assert (
        _value(url, "SELECT count(*) FROM leads WHERE status = 'Converted'")
        == (counts["converted_leads"])
    )
    # one metrics row per campaign per active day, and no other
    days = _value(
        url,
        f"SELECT sum(least(end_date, DATE '{AS_OF}') - start_date + 1) FROM campaigns",
    )
    assert _value(url, "SELECT count(*) FROM campaign_metrics") == days
    assert (
        _value(
            url,
            "SELECT count(*) FROM campaign_metrics AS m JOIN campaigns AS c USING (campaign_id) "
            f"WHERE m.metric_date BETWEEN c.start_date AND least(c.end_date, DATE '{AS_OF}')",
        )
        == days
    )
    assert _value(url, "SELECT count(DISTINCT visit_date) FROM website_traffic") == 365


def test_the_bench_scale_has_the_issue_shape() -> None:
    sales, marketing = sales_scale.counts(50_000), marketing_scale.counts(50_000)
    assert sales["customers"] == 100_000 and sales["orders"] == 1_000_000
    assert sales["order_items"] == 3_000_000 and marketing["leads"] == 1_000_000
    assert marketing["campaigns"] >= 1_000
    assert 0.03 <= marketing["converted_leads"] / marketing["leads"] <= 0.05


def test_order_totals_are_sums_of_their_lines(seeded: dict[str, str]) -> None:
    wrong = _value(
        seeded["sales"],
        "SELECT count(*) FROM orders AS o LEFT JOIN (SELECT order_id, sum(line_total) AS s "
        "FROM order_items GROUP BY order_id) AS i USING (order_id) "
        "WHERE i.s IS NULL OR o.total_amount <> i.s",
    )
    assert wrong == 0


def test_converted_leads_are_customers(seeded: dict[str, str]) -> None:
    customers = {
        r["email"]: r["created_at"]
        for r in asyncio.run(_fetch(seeded["sales"], "SELECT email, created_at FROM customers"))
    }
    converted = asyncio.run(
        _fetch(
            seeded["marketing"],
            "SELECT email, converted_at FROM leads WHERE status = 'Converted'",
        )
    )
    assert converted
    for lead in converted:
        assert lead["email"] in customers
        assert lead["converted_at"] == customers[lead["email"]]
    unconverted = asyncio.run(
        _fetch(seeded["marketing"], "SELECT email FROM leads WHERE status <> 'Converted'")
    )
    assert not {r["email"] for r in unconverted} & set(customers)


@pytest.mark.parametrize("name", DOMAINS)
def test_every_quality_check_passes(seeded: dict[str, str], name: str) -> None:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(_dsn(seeded[name]))
        try:
            now = dt.datetime.combine(AS_OF + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
            return await run_checks(conn, domain(name).products, now=now)
        finally:
            await conn.close()

    results = asyncio.run(run())
    assert results
    failed = [
        (r.product, r.check_name, r.message)
        for r in results
        if r.outcome not in (Outcome.PASS, Outcome.WARN)
    ]
    assert failed == []


def test_seeding_refuses_a_database_with_data(seeded: dict[str, str]) -> None:
    async def generate(conn: asyncpg.Connection) -> None:
        raise AssertionError("must not run")

    assert not asyncio.run(seed_if_empty(domain("sales"), seeded["sales"], generate))

"""The seed's way against the mesh: the seed's notebook recipes (DATA_MODEL.md, "Cross-Domain
Analytics": pandas `read_sql` on both domain databases with their passwords, then `merge`)
against our mesh's metrics read as Arrow into a DataFrame, each end to end, interleaved."""

from __future__ import annotations

import gc
import io
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import create_engine

from bench.harness import (
    ARROW,
    MIB,
    DataMeshUp,
    RssSampler,
    Spread,
    client,
    get_ok,
    say,
    seconds_text,
    timer,
)
from bench.report import Section, Table, Target


def _engine(url: str) -> Any:
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def seed_journey(sales_url: str, marketing_url: str) -> pd.DataFrame:
    """DATA_MODEL.md, 1. Lead-to-Customer Journey, as written."""
    sales, marketing = _engine(sales_url), _engine(marketing_url)
    try:
        with sales.connect() as sales_conn, marketing.connect() as marketing_conn:
            leads_df = pd.read_sql(
                """
                SELECT lead_id, email, company, lead_source, campaign_id, created_at, status
                FROM leads
                WHERE status = 'Converted'
                """,
                marketing_conn,
            )
            customers_df = pd.read_sql(
                "SELECT customer_id, customer_name, email, created_at FROM customers", sales_conn
            )
        return leads_df.merge(customers_df, left_on="email", right_on="email", how="inner")
    finally:
        sales.dispose()
        marketing.dispose()


def seed_style_journey(sales_url: str, marketing_url: str) -> pd.DataFrame:
    """The journey recipe extended, in the seed's style, to the metric's columns: the orders
    and revenue of each matched customer since the lead converted need the orders too (the
    recipe as written reads none), matched on the trimmed, lower-cased email as the mesh."""
    sales, marketing = _engine(sales_url), _engine(marketing_url)
    try:
        with sales.connect() as sales_conn, marketing.connect() as marketing_conn:
            leads = pd.read_sql(
                "SELECT lead_id, email, company, lead_source, campaign_id, created_at, "
                "converted_at FROM leads WHERE status = 'Converted'",
                marketing_conn,
            )
            customers = pd.read_sql(
                "SELECT customer_id, customer_name, email, created_at FROM customers", sales_conn
            )
            orders = pd.read_sql(
                "SELECT order_id, customer_id, order_date, total_amount FROM orders "
                "WHERE order_status <> 'Cancelled'",
                sales_conn,
            )
        leads["key"] = leads["email"].str.strip().str.lower()
        customers["key"] = customers["email"].str.strip().str.lower()
        journey = leads.merge(customers, on="key", suffixes=("_lead", "_customer"))
        since = journey[["lead_id", "customer_id", "converted_at"]].merge(orders, on="customer_id")
        since = since[
            pd.to_datetime(since["order_date"])
            >= since["converted_at"].dt.normalize().dt.tz_localize(None)
        ]
        totals = since.groupby("lead_id").agg(
            orders_since_conversion=("order_id", "count"),
            revenue_since_conversion=("total_amount", "sum"),
        )
        return journey.merge(totals, on="lead_id", how="left")
    finally:
        sales.dispose()
        marketing.dispose()


def seed_campaign_roi(sales_url: str, marketing_url: str) -> pd.DataFrame:
    """DATA_MODEL.md, 2. Campaign ROI Analysis. Its revenue query joins leads and campaigns
    (marketing) with customers and orders (sales), which no single database can run ("This
    requires cross-domain join"): the notebook reads the four tables and joins them in
    pandas, the same joins and aggregates, then merges as written."""
    sales, marketing = _engine(sales_url), _engine(marketing_url)
    try:
        with sales.connect() as sales_conn, marketing.connect() as marketing_conn:
            campaigns_df = pd.read_sql("SELECT * FROM campaign_performance", marketing_conn)
            leads = pd.read_sql(
                "SELECT campaign_id, email FROM leads WHERE status = 'Converted'", marketing_conn
            )
            campaigns = pd.read_sql(
                "SELECT campaign_id, campaign_name FROM campaigns", marketing_conn
            )
            customers = pd.read_sql("SELECT customer_id, email FROM customers", sales_conn)
            orders = pd.read_sql(
                "SELECT order_id, customer_id, total_amount FROM orders", sales_conn
            )
        revenue_df = (
            leads.merge(customers, on="email")
            .merge(orders, on="customer_id")
            .merge(campaigns, on="campaign_id")
            .groupby(["campaign_id", "campaign_name"])
            .agg(attributed_revenue=("total_amount", "sum"), orders=("order_id", "nunique"))
            .reset_index()
        )
        roi_df = campaigns_df.merge(revenue_df, on="campaign_id")
        roi_df["roi"] = (roi_df["attributed_revenue"] - roi_df["spent"]) / roi_df["spent"] * 100
        return roi_df.sort_values("roi", ascending=False)
    finally:
        sales.dispose()
        marketing.dispose()


def mesh_metric(mesh: DataMeshUp, token: str, metric: str) -> pd.DataFrame:
    """A mesh metric, whole, as Arrow into a DataFrame."""
    with client(token) as http:
        response = get_ok(http, f"{mesh.url('mesh')}/mesh/v1/{metric}", headers={"Accept": ARROW})
    return pa.ipc.open_stream(io.BytesIO(response.content)).read_all().to_pandas()


def run(mesh: DataMeshUp, token: str, *, reps: int) -> Section:
    section = Section(
        "seed",
        "The seed's way against the mesh",
        "The seed's notebook recipes (the seed's `DATA_MODEL.md`: pandas `read_sql` over "
        "SQLAlchemy + psycopg on both domain databases, connecting with the databases' "
        "passwords, then `merge`), timed end to end from connecting to the final DataFrame, "
        "against our mesh's metric read whole as Arrow "
        "(`Accept: application/vnd.apache.arrow.stream` → `pyarrow.ipc.open_stream` → "
        f"`to_pandas()`), from the request to the DataFrame; {reps} repetitions, interleaved, "
        "median (min-max). The recipes are not the same computation as the metrics: the "
        "journey recipe matches emails exactly (the mesh trims and lower-cases them, through "
        "`email_key`), the ROI recipe counts every order of a converted lead's customer, "
        "Cancelled ones and those placed before the lead included, and sums a campaign's "
        "revenue once per matching lead (docs/mesh.md); the row counts are shown.",
    )
    sales_url, marketing_url = mesh.database_url("sales"), mesh.database_url("marketing")
    pairs: list[tuple[str, str, Callable[[], pd.DataFrame], Callable[[], pd.DataFrame]]] = [
        (
            "lead-to-customer journey",
            "lead-to-customer-journey",
            lambda: seed_journey(sales_url, marketing_url),
            lambda: mesh_metric(mesh, token, "lead-to-customer-journey"),
        ),
        (
            "lead-to-customer journey, seed-style with the metric's columns",
            "lead-to-customer-journey",
            lambda: seed_style_journey(sales_url, marketing_url),
            lambda: mesh_metric(mesh, token, "lead-to-customer-journey"),
        ),
        (
            "campaign ROI",
            "campaign-roi",
            lambda: seed_campaign_roi(sales_url, marketing_url),
            lambda: mesh_metric(mesh, token, "campaign-roi"),
        ),
    ]
    table = Table(
        ["metric", "seed's recipe", "mesh (Arrow)", "seed / mesh", "rows: seed", "rows: mesh"]
    )
    for name, _metric, seed_way, mesh_way in pairs:
        seed_way(), mesh_way()  # warm: the databases' caches, the mesh's discovery
        times: dict[str, list[float]] = {"seed": [], "mesh": []}
        rows: dict[str, int] = {}
        for rep in range(reps):
            say(f"seed's way: {name}, repetition {rep + 1} of {reps}")
            ways = [("seed", seed_way), ("mesh", mesh_way)]
            for label, way in ways if rep % 2 == 0 else reversed(ways):
                gc.collect()
                with RssSampler(mesh.pids) as rss, timer() as elapsed:
                    frame = way()
                times[label].append(elapsed[0])
                rows[label] = len(frame)
                section.rss.add(f"{name}: {label}", rss.peaks_mib())
                del frame
        seed, ours = Spread.of(times["seed"]), Spread.of(times["mesh"])
        speed = Spread.of([s / m for s, m in zip(times["seed"], times["mesh"], strict=True)])
        table.rows.append(
            [
                name,
                seconds_text(seed),
                seconds_text(ours),
                speed.text("x", 2),
                f"{rows['seed']:,}",
                f"{rows['mesh']:,}",
            ]
        )
        if "seed-style" in name:  # a comparison for the record, not the target's recipe
            continue
        section.targets.append(
            Target(
                f"mesh {name}",
                f"{seconds_text(ours)}; the seed's recipe {seconds_text(seed)}",
                "< 5 s end to end and faster than the seed's recipe",
                ours.median < 5 and ours.median < seed.median,
            )
        )
    section.tables.append(table)
    mesh_peak = max(
        (
            peaks.get("mesh", 0.0)
            for test, peaks in section.rss.tests.items()
            if test.endswith(": mesh")
        ),
        default=0.0,
    )
    section.targets.append(
        Target(
            "mesh peak RSS while it computes a metric",
            f"{mesh_peak * MIB / 1e6:.0f} MB = {mesh_peak:.0f} MiB",
            "< 400 MB (as for the services' exports)",
            mesh_peak * MIB / 1e6 < 400,
        )
    )
    return section

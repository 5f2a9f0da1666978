"""The test oracle of the mesh: the seed's notebook recipe, run directly against both databases.

As the seed's users do in their notebooks, this reads the Sales and Marketing databases straight
away (psycopg, one DataFrame per table) and computes each cross-domain metric with pandas merges
and groupbys, following the metric definitions the mesh documents (PRODUCT.md section 7 and each
metric's `definition`), never the mesh's own SQL:

- A customer *matches* a Converted lead when their emails are equal trimmed and lower-cased.
- Revenue counts every order except Cancelled ones.
- An order is *attributed* to a Converted lead (so to its campaign, channel and lead source) when
  it is the matched customer's and dated on or after the lead's creation day (UTC). Each order
  counts once per campaign, channel or source, however many leads match it.
- Money and ratios are Decimal, rounded half away from zero to 2 decimals; NULL is None, and a
  ratio is None where its denominator is 0.
- `since`/`until` (dates, inclusive) restrict the orders counted by order_date, except in the
  journey (they select leads by converted_at) and the acquisition cost (they bound the
  customers counted by created_at).

Each metric is a list of plain dicts keyed like the mesh's JSON columns (int, str, Decimal,
datetime.date, timezone-aware datetime.datetime, None), sorted by the metric's key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import numpy as np
import pandas as pd
import psycopg

Row = dict[str, Any]
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
HUNDRED = Decimal(100)

METRIC_NAMES: tuple[str, ...] = (
    "lead-to-customer-journey",
    "campaign-roi",
    "customer-acquisition-cost",
    "channel-effectiveness",
    "product-campaign-correlation",
    "lead-source-effectiveness",
)


def read_frame(conn: psycopg.Connection[Any], sql: str) -> pd.DataFrame:
    """A query's rows as a DataFrame, the way the notebook builds them from a cursor."""
    with conn.cursor() as cur:
        cur.execute(sql)
        assert cur.description is not None
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def ratio(numerator: Decimal | int, denominator: Decimal | int, scale: int = 1) -> Decimal | None:
    """numerator x scale / denominator, exact, rounded half away from zero to 2 decimals;
    None where the denominator is 0."""
    if denominator == 0:
        return None
    with localcontext() as context:
        context.prec = 60
        exact = Decimal(numerator) * scale / Decimal(denominator)
        return exact.quantize(CENT, rounding=ROUND_HALF_UP)


def money_sum(values: pd.Series) -> Decimal:
    """Exact sum of Decimal money."""
    return sum(values, ZERO)


def email_key(emails: pd.Series) -> pd.Series:
    """Emails as they are matched across domains: trimmed and lower-cased."""
    return emails.map(lambda email: email.strip().lower())


def utc_day(timestamps: pd.Series) -> pd.Series:
    """The UTC calendar day of each timestamp, as datetime.date."""
    return timestamps.map(lambda ts: ts.astimezone(dt.UTC).date())


def plain(value: Any) -> Any:
    """A pandas/numpy cell as the plain Python value the mesh's JSON stands for."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return None
        raise AssertionError(f"a float in the oracle: {value!r}")
    return value


def counts(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Counts missing after a left join are 0."""
    return frame.assign(**{c: [0 if pd.isna(n) else int(n) for n in frame[c]] for c in columns})


def amounts(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Money missing after a left join is 0.00."""
    return frame.assign(
        **{c: [m if isinstance(m, Decimal) else ZERO for m in frame[c]] for c in columns}
    )


def records(frame: pd.DataFrame, columns: list[str], key: list[str]) -> list[Row]:
    """The frame's rows as dicts of the given columns, sorted by the key."""
    rows = [{c: plain(v) for c, v in zip(columns, values, strict=True)} for values in
            frame[columns].itertuples(index=False, name=None)]  # fmt: skip
    return sorted(rows, key=lambda row: tuple(row[k] for k in key))


class MeshOracle:
    """Every metric of the mesh, computed with pandas from the two databases as they are now."""

    def __init__(self, sales_url: str, marketing_url: str) -> None:
        with psycopg.connect(sales_url, options="-c TimeZone=UTC") as sales_conn:
            self.customers = read_frame(
                sales_conn, "SELECT customer_id, customer_name, email, created_at FROM customers"
            )
            self.orders = read_frame(
                sales_conn,
                "SELECT order_id, customer_id, order_date, order_status, total_amount FROM orders",
            )
            self.order_items = read_frame(
                sales_conn, "SELECT order_id, product_id, quantity, line_total FROM order_items"
            )
            self.products = read_frame(
                sales_conn, "SELECT product_id, product_name, category FROM products"
            )
        with psycopg.connect(marketing_url, options="-c TimeZone=UTC") as marketing_conn:
            self.leads = read_frame(
                marketing_conn,
                "SELECT lead_id, email, company, lead_source, campaign_id, status, created_at, "
                "converted_at FROM leads",
            )
            self.campaigns = read_frame(
                marketing_conn,
                "SELECT campaign_id, campaign_name, channel, start_date, spent FROM campaigns",
            )

    # -- shared steps -----------------------------------------------------------------------

    def revenue_orders(self, since: dt.date | None, until: dt.date | None) -> pd.DataFrame:
        """Orders that count as revenue (not Cancelled), dated within since/until if given."""
        orders = self.orders[self.orders["order_status"] != "Cancelled"]
        if since is not None:
            orders = orders[orders["order_date"] >= since]
        if until is not None:
            orders = orders[orders["order_date"] <= until]
        return orders[["order_id", "customer_id", "order_date", "total_amount"]]

    def matched(self) -> pd.DataFrame:
        """Converted leads joined to the customer whose email they are (trimmed, any case)."""
        leads = self.leads[self.leads["status"] == "Converted"].rename(
            columns={"created_at": "lead_created_at"}
        )
        leads = leads.assign(email_key=email_key(leads["email"]))
        customers = self.customers.rename(columns={"created_at": "customer_created_at"})
        customers = customers.assign(email_key=email_key(customers["email"]))
        return leads.drop(columns=["email"]).merge(
            customers.drop(columns=["email"]), on="email_key", how="inner"
        )

    def attributed(self, since: dt.date | None, until: dt.date | None) -> pd.DataFrame:
        """(lead, order) pairs: the matched customer's orders dated on or after the lead's
        creation day, with the lead's campaign, channel and source."""
        matched = self.matched()
        matched = matched.assign(lead_day=utc_day(matched["lead_created_at"]))
        pairs = matched.merge(self.revenue_orders(since, until), on="customer_id", how="inner")
        pairs = pairs[pairs["order_date"] >= pairs["lead_day"]]
        return pairs.merge(self.campaigns[["campaign_id", "channel"]], on="campaign_id")

    @staticmethod
    def once_per(pairs: pd.DataFrame, group: str) -> pd.DataFrame:
        """Per group: the number and revenue of the distinct orders attributed to it."""
        distinct = pairs.drop_duplicates([group, "order_id"])
        return (
            distinct.groupby(group)
            .agg(orders=("order_id", "count"), revenue=("total_amount", money_sum))
            .reset_index()
        )

    # -- the metrics ------------------------------------------------------------------------

    def compute(
        self, metric: str, since: dt.date | None = None, until: dt.date | None = None
    ) -> list[Row]:
        """The metric's rows (`metric` as named in the mesh's URL)."""
        methods: dict[str, Callable[[dt.date | None, dt.date | None], list[Row]]] = {
            "lead-to-customer-journey": self.journey,
            "campaign-roi": self.campaign_roi,
            "customer-acquisition-cost": self.customer_acquisition_cost,
            "channel-effectiveness": self.channel_effectiveness,
            "product-campaign-correlation": self.product_campaign_correlation,
            "lead-source-effectiveness": self.lead_source_effectiveness,
        }
        return methods[metric](since, until)

    def journey(self, since: dt.date | None = None, until: dt.date | None = None) -> list[Row]:
        """One row per Converted lead that is a customer; orders since the conversion day."""
        journey = self.matched()
        journey = journey.assign(converted_day=utc_day(journey["converted_at"]))
        if since is not None:
            journey = journey[journey["converted_day"] >= since]
        if until is not None:
            journey = journey[journey["converted_day"] <= until]
        journey = journey.merge(
            self.campaigns[["campaign_id", "campaign_name"]], on="campaign_id", how="left"
        )
        journey["days_to_conversion"] = [
            (customer - lead).days
            for customer, lead in zip(
                utc_day(journey["customer_created_at"]),
                utc_day(journey["lead_created_at"]),
                strict=True,
            )
        ]
        bought = journey[["lead_id", "customer_id", "converted_day"]].merge(
            self.revenue_orders(None, None), on="customer_id"
        )
        bought = bought[bought["order_date"] >= bought["converted_day"]]
        per_lead = (
            bought.groupby("lead_id")
            .agg(
                orders_since_conversion=("order_id", "count"),
                revenue_since_conversion=("total_amount", money_sum),
            )
            .reset_index()
        )
        journey = journey.merge(per_lead, on="lead_id", how="left")
        journey = amounts(counts(journey, "orders_since_conversion"), "revenue_since_conversion")
        columns = [
            "lead_id",
            "customer_id",
            "customer_name",
            "company",
            "lead_source",
            "campaign_id",
            "campaign_name",
            "lead_created_at",
            "converted_at",
            "customer_created_at",
            "days_to_conversion",
            "orders_since_conversion",
            "revenue_since_conversion",
        ]
        return records(journey, columns, ["lead_id"])

    def campaign_roi(self, since: dt.date | None = None, until: dt.date | None = None) -> list[Row]:
        """Per campaign: spend, the attributed orders and revenue, and the return in percent."""
        per_campaign = self.once_per(self.attributed(since, until), "campaign_id")
        roi = self.campaigns.merge(per_campaign, on="campaign_id", how="left")
        roi = amounts(counts(roi, "orders"), "revenue")
        roi["attributed_revenue"] = roi["revenue"]
        roi["roi_pct"] = [
            ratio(revenue - spent, spent, 100)
            for revenue, spent in zip(roi["revenue"], roi["spent"], strict=True)
        ]
        columns = [
            "campaign_id",
            "campaign_name",
            "channel",
            "spent",
            "attributed_revenue",
            "orders",
            "roi_pct",
        ]
        return records(roi, columns, ["campaign_id"])

    def customer_acquisition_cost(
        self, since: dt.date | None = None, until: dt.date | None = None
    ) -> list[Row]:
        """Total spend (each campaign once) per customer created in [since, until]."""
        total = money_sum(self.campaigns["spent"])
        first = since if since is not None else min(self.campaigns["start_date"])
        created = utc_day(self.customers["created_at"])
        new = created >= first
        if until is not None:
            new &= created <= until
        new_customers = int(new.sum())
        return [
            {
                "since": first,
                "until": until,
                "total_marketing_spend": total,
                "new_customers": new_customers,
                "customer_acquisition_cost": ratio(total, new_customers),
            }
        ]

    def channel_effectiveness(
        self, since: dt.date | None = None, until: dt.date | None = None
    ) -> list[Row]:
        """Per channel: campaigns, leads, conversions, spend once per campaign, revenue."""
        spend = (
            self.campaigns.groupby("channel")
            .agg(campaigns=("campaign_id", "count"), total_spent=("spent", money_sum))
            .reset_index()
        )
        leads = self.leads.merge(self.campaigns[["campaign_id", "channel"]], on="campaign_id")
        leads = leads.assign(converted=(leads["status"] == "Converted").astype(int))
        lead_counts = (
            leads.groupby("channel")
            .agg(total_leads=("lead_id", "count"), converted_leads=("converted", "sum"))
            .reset_index()
        )
        revenue = self.once_per(self.attributed(since, until), "channel")
        channels = spend.merge(lead_counts, on="channel", how="left").merge(
            revenue, on="channel", how="left"
        )
        channels = amounts(
            counts(channels, "campaigns", "total_leads", "converted_leads", "orders"), "revenue"
        )
        channels["attributed_revenue"] = channels["revenue"]
        channels["revenue_per_dollar"] = [
            ratio(revenue, spent)
            for revenue, spent in zip(channels["revenue"], channels["total_spent"], strict=True)
        ]
        columns = [
            "channel",
            "campaigns",
            "total_leads",
            "converted_leads",
            "total_spent",
            "attributed_revenue",
            "orders",
            "revenue_per_dollar",
        ]
        return records(channels, columns, ["channel"])

    def product_campaign_correlation(
        self, since: dt.date | None = None, until: dt.date | None = None
    ) -> list[Row]:
        """Per campaign and product: the lines of the campaign's attributed orders."""
        campaign_orders = self.attributed(since, until)[["campaign_id", "order_id"]]
        lines = campaign_orders.drop_duplicates().merge(self.order_items, on="order_id")
        per_pair = (
            lines.groupby(["campaign_id", "product_id"])
            .agg(
                orders=("order_id", "nunique"),
                quantity=("quantity", "sum"),
                revenue=("line_total", money_sum),
            )
            .reset_index()
        )
        per_pair = per_pair.merge(
            self.campaigns[["campaign_id", "campaign_name"]], on="campaign_id"
        ).merge(self.products, on="product_id")
        columns = [
            "campaign_id",
            "campaign_name",
            "product_id",
            "product_name",
            "category",
            "orders",
            "quantity",
            "revenue",
        ]
        return records(per_pair, columns, ["campaign_id", "product_id"])

    def lead_source_effectiveness(
        self, since: dt.date | None = None, until: dt.date | None = None
    ) -> list[Row]:
        """Per lead source: leads, the distinct customers they became, conversion, revenue."""
        sources = self.leads.groupby("lead_source").agg(leads=("lead_id", "count")).reset_index()
        won = (
            self.matched()
            .groupby("lead_source")
            .agg(converted_customers=("customer_id", "nunique"))
            .reset_index()
        )
        revenue = self.once_per(self.attributed(since, until), "lead_source")
        table = sources.merge(won, on="lead_source", how="left").merge(
            revenue, on="lead_source", how="left"
        )
        table = amounts(counts(table, "leads", "converted_customers"), "revenue")
        table["conversion_rate"] = [
            ratio(won, leads, 100)
            for won, leads in zip(table["converted_customers"], table["leads"], strict=True)
        ]
        table["revenue_per_converted_customer"] = [
            ratio(revenue, won)
            for revenue, won in zip(table["revenue"], table["converted_customers"], strict=True)
        ]
        columns = [
            "lead_source",
            "leads",
            "converted_customers",
            "conversion_rate",
            "revenue",
            "revenue_per_converted_customer",
        ]
        return records(table, columns, ["lead_source"])

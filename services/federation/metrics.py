"""The mesh's cross-domain metrics: each declares its inputs (lineage), its output columns and
one DuckDB statement over the named inputs (the Spark engine runs that same statement,
translated by sqlglot: services/federation/dialect.py).

Shared meanings:
- A customer *matches* a Converted lead when their emails are equal trimmed and lower-cased.
  The mesh never reads an email: it joins on `email_key`, the domains' pseudonymous key of
  the trimmed, lower-cased email (an HMAC keyed by the mesh-wide pseudonymisation secret), so
  equal keys are equal emails in that sense. Its service token holds read scopes only.
- Revenue counts every order except Cancelled ones (the domain filters them out).
- An order is *attributed* to a Converted lead (and so to its campaign, channel and lead
  source) when it belongs to the matched customer and is dated on or after the lead's creation
  day. Each order counts once per campaign, channel or source, however many leads match it.
- Ratios are computed exactly and rounded half away from zero to 2 decimals; NULL where the
  denominator is 0.
- `since`/`until` (ISO dates, inclusive) restrict the orders counted (by order_date), except
  where a metric says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.federation.fetch import Input, Keys
from shared.declarations.products import Column, ColumnType, Product

INTEGER, TEXT, MONEY = ColumnType.INTEGER, ColumnType.TEXT, ColumnType.MONEY
DATE, TIMESTAMP, DECIMAL = ColumnType.DATE, ColumnType.TIMESTAMP, ColumnType.DECIMAL


@dataclass(frozen=True)
class Metric:
    """A cross-domain metric: a product of the mesh computed from domain products."""

    product: Product
    inputs: tuple[Input, ...]
    sql: str
    period: str
    # the domains whose own rows the metric answers, one per output row with that row's values
    # (a lead, a customer, a campaign, a product): reading it needs their read scopes as well as
    # mesh:read. Aggregates over a domain's rows (per channel, per source, totals) do not.
    row_domains: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.product.name

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scopes a caller needs to read the metric: mesh:read, and the read scope of each
        domain whose rows it answers (derived products inherit their inputs' access)."""
        return ("mesh:read", *(f"{domain}:read" for domain in self.row_domains))


# DuckDB macros every metric may use: exact ratios on integer cents, rounded half away from 0.
# Integer arithmetic only (no sign(), which is a float on Spark): the Spark engine expands each
# call in place (services/federation/dialect.py), so both engines run these same definitions.
MACROS = (
    "CREATE MACRO cents(x) AS CAST(round(x * 100) AS HUGEINT)",
    "CREATE MACRO round_div(n, d) AS CASE WHEN d = 0 THEN NULL "
    "WHEN (n < 0) = (d < 0) THEN (2 * abs(n) + abs(d)) // (2 * abs(d)) "
    "ELSE -((2 * abs(n) + abs(d)) // (2 * abs(d))) END",
    "CREATE MACRO hundredths(h) AS CAST(CAST(h AS DECIMAL(18, 0)) * 0.01 AS DECIMAL(18, 2))",
)

_CUSTOMERS = Input(
    "customers", "sales", "customers", ("customer_id", "customer_name", "email_key", "created_at")
)
# the customers Converted leads matched: the only ones whose orders a metric attributes (the
# orders of the others are not read: services.federation.fetch.Keys)
_MATCHED_CUSTOMERS = Keys(
    "customer_id",
    "SELECT DISTINCT c.customer_id FROM leads AS l "
    "JOIN customers AS c ON l.email_key = c.email_key WHERE l.status = 'Converted'",
)
_ORDERS = Input(
    "orders",
    "sales",
    "orders",
    ("order_id", "customer_id", "order_date", "total_amount"),
    filters=(("order_status", "neq.Cancelled"),),
    since_column="order_date",
    until_column="order_date",
    keys=_MATCHED_CUSTOMERS,
)
_CONVERTED_LEADS = Input(
    "leads",
    "marketing",
    "leads",
    (
        "lead_id",
        "email_key",
        "company",
        "lead_source",
        "campaign_id",
        "status",
        "created_at",
        "converted_at",
    ),
    filters=(("status", "eq.Converted"),),
)
_LEADS = Input(
    "leads",
    "marketing",
    "leads",
    ("lead_id", "email_key", "lead_source", "campaign_id", "status", "created_at"),
)
_CAMPAIGNS = Input(
    "campaigns",
    "marketing",
    "campaigns",
    ("campaign_id", "campaign_name", "channel", "spent", "start_date"),
)

_MATCHED = """
matched AS (
    SELECT l.lead_id, l.campaign_id, l.lead_source, l.created_at AS lead_created_at, c.customer_id
    FROM leads AS l
    JOIN customers AS c ON l.email_key = c.email_key
    WHERE l.status = 'Converted'
),
attributed AS (
    SELECT m.lead_id, m.campaign_id, m.lead_source, o.order_id, o.total_amount
    FROM matched AS m
    JOIN orders AS o
      ON o.customer_id = m.customer_id AND o.order_date >= CAST(m.lead_created_at AS DATE)
)"""

JOURNEY = Metric(
    product=Product(
        name="lead-to-customer-journey",
        source="metric",
        description="Marketing leads that became Sales customers, with what they bought since.",
        definition=(
            "One row per Converted lead whose email (trimmed, case-insensitive) is a customer's. "
            "days_to_conversion = customer created_at date - lead created_at date; "
            "orders_since_conversion and revenue_since_conversion count the customer's orders "
            "(except Cancelled) dated on or after the lead's converted_at date. since/until select "
            "leads by converted_at."
        ),
        key=("lead_id",),
        is_table=False,
        columns=(
            Column("lead_id", INTEGER, "The Converted lead (marketing/leads)."),
            Column("customer_id", INTEGER, "The customer the lead became (sales/customers)."),
            Column("customer_name", TEXT, "The customer's name."),
            Column("company", TEXT, "The company the lead gave.", nullable=True),
            Column("lead_source", TEXT, "Where the lead came from."),
            Column("campaign_id", INTEGER, "The campaign the lead came from."),
            Column("campaign_name", TEXT, "That campaign's name.", nullable=True),
            Column("lead_created_at", TIMESTAMP, "When the lead was created."),
            Column("converted_at", TIMESTAMP, "When the lead converted."),
            Column("customer_created_at", TIMESTAMP, "When the customer was created."),
            Column("days_to_conversion", INTEGER, "Days from lead creation to customer creation."),
            Column("orders_since_conversion", INTEGER, "Orders since conversion."),
            Column("revenue_since_conversion", MONEY, "Revenue of those orders."),
        ),
    ),
    inputs=(
        Input(
            "leads",
            "marketing",
            "leads",
            _CONVERTED_LEADS.columns,
            filters=_CONVERTED_LEADS.filters,
            since_column="converted_at",
            until_column="converted_at",
            until_is_timestamp=True,
        ),
        _CUSTOMERS,
        Input(
            "orders",
            "sales",
            "orders",
            _ORDERS.columns,
            filters=_ORDERS.filters,
            keys=_MATCHED_CUSTOMERS,
        ),
        _CAMPAIGNS,
    ),
    row_domains=("marketing", "sales"),  # a lead's row and its customer's, per row
    period="since/until select the leads converted in those days",
    sql="""
SELECT l.lead_id, c.customer_id, c.customer_name, l.company, l.lead_source, l.campaign_id,
       cp.campaign_name, l.created_at AS lead_created_at, l.converted_at,
       c.created_at AS customer_created_at,
       CAST(CAST(c.created_at AS DATE) - CAST(l.created_at AS DATE) AS INTEGER) AS days_to_conversion,
       CAST(count(o.order_id) AS INTEGER) AS orders_since_conversion,
       CAST(coalesce(sum(o.total_amount), 0) AS DECIMAL(14, 2)) AS revenue_since_conversion
FROM leads AS l
JOIN customers AS c ON l.email_key = c.email_key
LEFT JOIN campaigns AS cp ON cp.campaign_id = l.campaign_id
LEFT JOIN orders AS o
  ON o.customer_id = c.customer_id AND o.order_date >= CAST(l.converted_at AS DATE)
GROUP BY ALL
""",
)

CAMPAIGN_ROI = Metric(
    product=Product(
        name="campaign-roi",
        source="metric",
        description="Return on each campaign's spend, from the revenue of the customers it won.",
        definition=(
            "One row per campaign. attributed_revenue and orders: the orders attributed to the "
            "campaign's Converted leads (orders of the matched customer dated on or after the "
            "lead's creation day, except Cancelled; each order once per campaign). "
            "roi_pct = (attributed_revenue - spent) / spent x 100, 2 decimals, NULL where spent "
            "is 0. spent is the campaign's spend to date; since/until restrict the orders."
        ),
        key=("campaign_id",),
        is_table=False,
        columns=(
            Column("campaign_id", INTEGER, "The campaign (marketing/campaigns)."),
            Column("campaign_name", TEXT, "The campaign's name."),
            Column("channel", TEXT, "The campaign's channel."),
            Column("spent", MONEY, "The campaign's spend to date."),
            Column("attributed_revenue", MONEY, "Revenue of the attributed orders."),
            Column("orders", INTEGER, "Number of attributed orders."),
            Column(
                "roi_pct", DECIMAL, "Return on investment in percent.", nullable=True, precision=12
            ),
        ),
    ),
    row_domains=("marketing",),  # a campaign's own row (name, channel, spend) per row
    inputs=(_CONVERTED_LEADS, _CUSTOMERS, _ORDERS, _CAMPAIGNS),
    period="since/until restrict the attributed orders by order_date",
    sql=f"""
WITH {_MATCHED},
per_campaign AS (
    SELECT campaign_id, count(*) AS orders, sum(total_amount) AS revenue
    FROM (SELECT DISTINCT campaign_id, order_id, total_amount FROM attributed)
    GROUP BY campaign_id
)
SELECT cp.campaign_id, cp.campaign_name, cp.channel, cp.spent,
       CAST(coalesce(p.revenue, 0) AS DECIMAL(14, 2)) AS attributed_revenue,
       CAST(coalesce(p.orders, 0) AS INTEGER) AS orders,
       CAST(hundredths(round_div((cents(coalesce(p.revenue, 0)) - cents(cp.spent)) * 10000,
                                 cents(cp.spent))) AS DECIMAL(12, 2)) AS roi_pct
FROM campaigns AS cp
LEFT JOIN per_campaign AS p ON p.campaign_id = cp.campaign_id
""",
)

CUSTOMER_ACQUISITION_COST = Metric(
    product=Product(
        name="customer-acquisition-cost",
        source="metric",
        description="Total marketing spend divided by the customers acquired since a date.",
        definition=(
            "One row. total_marketing_spend = the sum of every campaign's spent (each campaign "
            "once); new_customers = customers created on or after `since` (and on or before "
            "`until` if given); customer_acquisition_cost = total_marketing_spend / new_customers, "
            "2 decimals, NULL when there are none. `since` defaults to the first campaign's "
            "start_date (the start of the marketing window)."
        ),
        key=("since",),
        is_table=False,
        columns=(
            Column("since", DATE, "First day customers are counted from."),
            Column("until", DATE, "Last day customers are counted to, if bounded.", nullable=True),
            Column("total_marketing_spend", MONEY, "Sum of every campaign's spend."),
            Column("new_customers", INTEGER, "Customers created in the period."),
            Column("customer_acquisition_cost", MONEY, "Spend per new customer.", nullable=True),
        ),
    ),
    inputs=(
        Input(
            "customers",
            "sales",
            "customers",
            ("customer_id", "created_at"),
            since_column="created_at",
            until_column="created_at",
            until_is_timestamp=True,
        ),
        _CAMPAIGNS,
    ),
    period="since/until bound the customers counted by created_at; since defaults to the first campaign's start",
    sql="""
WITH bounds AS (
    SELECT coalesce(CAST($since AS DATE), (SELECT min(start_date) FROM campaigns)) AS since,
           CAST($until AS DATE) AS until
),
spend AS (SELECT CAST(coalesce(sum(spent), 0) AS DECIMAL(14, 2)) AS total FROM campaigns),
acquired AS (
    SELECT count(*) AS n FROM customers, bounds
    WHERE CAST(created_at AS DATE) >= bounds.since
      AND (bounds.until IS NULL OR CAST(created_at AS DATE) <= bounds.until)
)
SELECT bounds.since, bounds.until, spend.total AS total_marketing_spend,
       CAST(acquired.n AS INTEGER) AS new_customers,
       CAST(hundredths(round_div(cents(spend.total), acquired.n)) AS DECIMAL(14, 2))
         AS customer_acquisition_cost
FROM bounds, spend, acquired
""",
)

CHANNEL_EFFECTIVENESS = Metric(
    product=Product(
        name="channel-effectiveness",
        source="metric",
        description="Per marketing channel: leads, conversions, spend and the revenue it brought.",
        definition=(
            "One row per channel. campaigns, total_leads, converted_leads: counts of the "
            "channel's campaigns and their leads; total_spent sums each campaign's spent once "
            "(not once per lead); attributed_revenue and orders: the orders attributed to the "
            "channel's Converted leads, each order once per channel; revenue_per_dollar = "
            "attributed_revenue / total_spent, 2 decimals, NULL where nothing was spent."
        ),
        key=("channel",),
        is_table=False,
        columns=(
            Column("channel", TEXT, "The marketing channel."),
            Column("campaigns", INTEGER, "Campaigns on the channel."),
            Column("total_leads", INTEGER, "Leads from those campaigns."),
            Column("converted_leads", INTEGER, "Of which Converted."),
            Column("total_spent", MONEY, "Spend of the channel's campaigns, each once."),
            Column("attributed_revenue", MONEY, "Revenue of the attributed orders."),
            Column("orders", INTEGER, "Number of attributed orders."),
            Column(
                "revenue_per_dollar",
                DECIMAL,
                "Revenue per dollar spent.",
                nullable=True,
                precision=12,
            ),
        ),
    ),
    inputs=(_LEADS, _CUSTOMERS, _ORDERS, _CAMPAIGNS),
    period="since/until restrict the attributed orders by order_date",
    sql=f"""
WITH {_MATCHED},
spend AS (
    SELECT channel, count(*) AS campaigns, sum(spent) AS spent FROM campaigns GROUP BY channel
),
lead_counts AS (
    SELECT cp.channel, count(*) AS leads, count(*) FILTER (WHERE l.status = 'Converted') AS converted
    FROM leads AS l JOIN campaigns AS cp ON cp.campaign_id = l.campaign_id
    GROUP BY cp.channel
),
revenue AS (
    SELECT channel, count(*) AS orders, sum(total_amount) AS revenue
    FROM (
        SELECT DISTINCT cp.channel, a.order_id, a.total_amount
        FROM attributed AS a JOIN campaigns AS cp ON cp.campaign_id = a.campaign_id
    )
    GROUP BY channel
)
SELECT s.channel, CAST(s.campaigns AS INTEGER) AS campaigns,
       CAST(coalesce(lc.leads, 0) AS INTEGER) AS total_leads,
       CAST(coalesce(lc.converted, 0) AS INTEGER) AS converted_leads,
       CAST(s.spent AS DECIMAL(14, 2)) AS total_spent,
       CAST(coalesce(r.revenue, 0) AS DECIMAL(14, 2)) AS attributed_revenue,
       CAST(coalesce(r.orders, 0) AS INTEGER) AS orders,
       CAST(hundredths(round_div(cents(coalesce(r.revenue, 0)) * 100, cents(s.spent)))
            AS DECIMAL(12, 2)) AS revenue_per_dollar
FROM spend AS s
LEFT JOIN lead_counts AS lc ON lc.channel = s.channel
LEFT JOIN revenue AS r ON r.channel = s.channel
""",
)

PRODUCT_CAMPAIGN_CORRELATION = Metric(
    product=Product(
        name="product-campaign-correlation",
        source="metric",
        description="Which campaigns sell which products, through the leads they converted.",
        definition=(
            "One row per campaign and product sold through it: the order lines of the orders "
            "attributed to the campaign's Converted leads (each order once per campaign). "
            "orders = distinct orders containing the product; quantity and revenue sum the "
            "lines' quantity and line_total."
        ),
        key=("campaign_id", "product_id"),
        is_table=False,
        columns=(
            Column("campaign_id", INTEGER, "The campaign (marketing/campaigns)."),
            Column("campaign_name", TEXT, "The campaign's name."),
            Column("product_id", INTEGER, "The product (sales/products)."),
            Column("product_name", TEXT, "The product's name."),
            Column("category", TEXT, "The product's category."),
            Column("orders", INTEGER, "Attributed orders containing the product."),
            Column("quantity", INTEGER, "Units sold in them."),
            Column("revenue", MONEY, "Sum of those lines' line_total."),
        ),
    ),
    row_domains=("marketing", "sales"),  # campaign rows; product rows
    inputs=(
        _CONVERTED_LEADS,
        _CUSTOMERS,
        _ORDERS,
        Input(
            "order_items",
            "sales",
            "order-items",
            ("order_id", "product_id", "quantity", "line_total"),
        ),
        Input("products", "sales", "products", ("product_id", "product_name", "category")),
        _CAMPAIGNS,
    ),
    period="since/until restrict the attributed orders by order_date",
    sql=f"""
WITH {_MATCHED},
campaign_orders AS (SELECT DISTINCT campaign_id, order_id FROM attributed)
SELECT co.campaign_id, cp.campaign_name, i.product_id, p.product_name, p.category,
       CAST(count(DISTINCT co.order_id) AS INTEGER) AS orders,
       CAST(sum(i.quantity) AS INTEGER) AS quantity,
       CAST(sum(i.line_total) AS DECIMAL(14, 2)) AS revenue
FROM campaign_orders AS co
JOIN order_items AS i ON i.order_id = co.order_id
JOIN products AS p ON p.product_id = i.product_id
JOIN campaigns AS cp ON cp.campaign_id = co.campaign_id
GROUP BY ALL
""",
)

LEAD_SOURCE_EFFECTIVENESS = Metric(
    product=Product(
        name="lead-source-effectiveness",
        source="metric",
        description="Per lead source: leads, the customers they became, and the revenue.",
        definition=(
            "One row per lead_source. leads = all leads from the source; converted_customers = "
            "distinct customers matched by its Converted leads; conversion_rate = "
            "converted_customers / leads x 100, 2 decimals; revenue = the orders attributed to "
            "its Converted leads, each order once per source; revenue_per_converted_customer = "
            "revenue / converted_customers, 2 decimals, NULL when there are none."
        ),
        key=("lead_source",),
        is_table=False,
        columns=(
            Column("lead_source", TEXT, "Where the leads came from."),
            Column("leads", INTEGER, "Leads from the source."),
            Column("converted_customers", INTEGER, "Customers they became."),
            Column(
                "conversion_rate", DECIMAL, "converted_customers / leads in percent.", precision=7
            ),
            Column("revenue", MONEY, "Revenue of the attributed orders."),
            Column(
                "revenue_per_converted_customer", MONEY, "Revenue per customer won.", nullable=True
            ),
        ),
    ),
    inputs=(_LEADS, _CUSTOMERS, _ORDERS),
    period="since/until restrict the attributed orders by order_date",
    sql=f"""
WITH {_MATCHED},
sources AS (SELECT lead_source, count(*) AS leads FROM leads GROUP BY lead_source),
won AS (SELECT lead_source, count(DISTINCT customer_id) AS customers FROM matched GROUP BY lead_source),
revenue AS (
    SELECT lead_source, sum(total_amount) AS revenue
    FROM (SELECT DISTINCT lead_source, order_id, total_amount FROM attributed)
    GROUP BY lead_source
)
SELECT s.lead_source, CAST(s.leads AS INTEGER) AS leads,
       CAST(coalesce(w.customers, 0) AS INTEGER) AS converted_customers,
       CAST(hundredths(round_div(coalesce(w.customers, 0) * 10000, s.leads)) AS DECIMAL(7, 2))
         AS conversion_rate,
       CAST(coalesce(r.revenue, 0) AS DECIMAL(14, 2)) AS revenue,
       CAST(hundredths(round_div(cents(coalesce(r.revenue, 0)), coalesce(w.customers, 0)))
            AS DECIMAL(14, 2)) AS revenue_per_converted_customer
FROM sources AS s
LEFT JOIN won AS w ON w.lead_source = s.lead_source
LEFT JOIN revenue AS r ON r.lead_source = s.lead_source
""",
)

METRICS: tuple[Metric, ...] = (
    JOURNEY,
    CAMPAIGN_ROI,
    CUSTOMER_ACQUISITION_COST,
    CHANNEL_EFFECTIVENESS,
    PRODUCT_CAMPAIGN_CORRELATION,
    LEAD_SOURCE_EFFECTIVENESS,
)

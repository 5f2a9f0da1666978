"""Sales schema: customers, products, orders, order_items and the three analytics views.

Revision ID: 0001_sales
Revises:
Create Date: 2024-10-18

Each statement is executed on its own (asyncpg prepares statements and refuses several
commands in one). Every view column is cast to the type its data product declares, and every
view's definition is written above it in the same words as the product's `definition`.
Nullable columns: customers.phone, customers.industry and products.description; every other
column is NOT NULL.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001_sales"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


TABLES: tuple[str, ...] = (
    r"""
    CREATE TABLE customers (
        customer_id   serial PRIMARY KEY,
        customer_name text NOT NULL CHECK (btrim(customer_name) <> ''),
        email         text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$'),
        phone         text,
        country       text NOT NULL CHECK (btrim(country) <> ''),
        industry      text,
        company_size  text NOT NULL
                      CHECK (company_size IN ('Enterprise', 'Mid-Market', 'Small')),
        created_at    timestamptz NOT NULL DEFAULT now(),
        updated_at    timestamptz NOT NULL DEFAULT now()
    )
    """,
    # one customer per email address, compared trimmed and case-insensitively
    "CREATE UNIQUE INDEX customers_email_key ON customers (lower(btrim(email)))",
    "CREATE INDEX customers_created_at_idx ON customers (created_at)",
    """
    CREATE TABLE products (
        product_id   serial PRIMARY KEY,
        product_name text NOT NULL CHECK (btrim(product_name) <> ''),
        category     text NOT NULL CHECK (category IN ('Software', 'Infrastructure')),
        price        numeric(14,2) NOT NULL CHECK (price >= 0),
        cost         numeric(14,2) NOT NULL CHECK (cost >= 0),
        description  text
    )
    """,
    """
    CREATE TABLE orders (
        order_id       serial PRIMARY KEY,
        customer_id    integer NOT NULL REFERENCES customers (customer_id),
        order_date     date NOT NULL,
        order_status   text NOT NULL
                       CHECK (order_status IN ('Pending', 'Processing', 'Completed', 'Cancelled')),
        total_amount   numeric(14,2) NOT NULL CHECK (total_amount >= 0),
        payment_method text NOT NULL CHECK (btrim(payment_method) <> ''),
        sales_rep      text NOT NULL CHECK (btrim(sales_rep) <> ''),
        region         text NOT NULL
                       CHECK (region IN ('North America', 'Europe', 'Asia Pacific'))
    )
    """,
    "CREATE INDEX orders_customer_id_idx ON orders (customer_id)",
    "CREATE INDEX orders_order_date_idx ON orders (order_date)",
    "CREATE INDEX orders_total_amount_idx ON orders (total_amount)",
    """
    CREATE TABLE order_items (
        item_id          serial PRIMARY KEY,
        order_id         integer NOT NULL REFERENCES orders (order_id),
        product_id       integer NOT NULL REFERENCES products (product_id),
        quantity         integer NOT NULL CHECK (quantity > 0),
        unit_price       numeric(14,2) NOT NULL CHECK (unit_price >= 0),
        discount_percent numeric(5,2) NOT NULL DEFAULT 0
                         CHECK (discount_percent BETWEEN 0 AND 100),
        line_total       numeric(14,2) NOT NULL CHECK (line_total >= 0)
    )
    """,
    "CREATE INDEX order_items_order_id_idx ON order_items (order_id)",
    "CREATE INDEX order_items_product_id_idx ON order_items (product_id)",
)

VIEWS: tuple[str, ...] = (
    """
    -- One row per calendar month of order_date that has orders, counting every
    -- order except Cancelled ones. month is the first day of the month; order_count the number
    -- of orders; total_revenue the sum of their total_amount; avg_order_value the average
    -- total_amount rounded to 2 decimals; unique_customers the number of distinct customers
    -- who ordered that month.
    CREATE VIEW sales_summary AS
    SELECT
        date_trunc('month', o.order_date)::date                 AS month,
        count(*)::integer                                       AS order_count,
        sum(o.total_amount)::numeric(14,2)                      AS total_revenue,
        round(avg(o.total_amount), 2)::numeric(14,2)            AS avg_order_value,
        count(DISTINCT o.customer_id)::integer                  AS unique_customers
    FROM orders AS o
    WHERE o.order_status <> 'Cancelled'
    GROUP BY date_trunc('month', o.order_date)::date
    """,
    """
    -- One row per customer, including customers without orders,
    -- counting every order except Cancelled ones. total_orders is the number of orders;
    -- lifetime_value the sum of their total_amount (0.00 without orders); avg_order_value the
    -- average total_amount rounded to 2 decimals (NULL without orders); last_order_date the
    -- latest order_date (NULL without orders).
    CREATE VIEW customer_lifetime_value AS
    SELECT
        c.customer_id::integer                                  AS customer_id,
        c.customer_name::text                                   AS customer_name,
        c.country::text                                         AS country,
        c.industry::text                                        AS industry,
        count(o.order_id)::integer                              AS total_orders,
        coalesce(sum(o.total_amount), 0)::numeric(14,2)         AS lifetime_value,
        round(avg(o.total_amount), 2)::numeric(14,2)            AS avg_order_value,
        max(o.order_date)::date                                 AS last_order_date
    FROM customers AS c
    LEFT JOIN orders AS o
        ON o.customer_id = c.customer_id AND o.order_status <> 'Cancelled'
    GROUP BY c.customer_id
    """,
    """
    -- One row per product, including products never sold, counting the
    -- order lines of every order except Cancelled ones. times_sold is the number of distinct
    -- orders containing the product; total_quantity the sum of quantity (0 when unsold);
    -- total_revenue the sum of line_total (0.00 when unsold); avg_discount the average
    -- discount_percent over those order lines, unweighted, rounded to 2 decimals (NULL when
    -- unsold).
    CREATE VIEW product_performance AS
    SELECT
        p.product_id::integer                                   AS product_id,
        p.product_name::text                                    AS product_name,
        p.category::text                                        AS category,
        count(DISTINCT oi.order_id)::integer                    AS times_sold,
        coalesce(sum(oi.quantity), 0)::integer                  AS total_quantity,
        coalesce(sum(oi.line_total), 0)::numeric(14,2)          AS total_revenue,
        round(avg(oi.discount_percent), 2)::numeric(5,2)        AS avg_discount
    FROM products AS p
    LEFT JOIN (
        order_items AS oi
        JOIN orders AS o
            ON o.order_id = oi.order_id AND o.order_status <> 'Cancelled'
    ) ON oi.product_id = p.product_id
    GROUP BY p.product_id
    """,
)


def upgrade() -> None:
    """Create the Sales tables, their constraints and indexes, then the views."""
    for statement in (*TABLES, *VIEWS):
        op.execute(statement)


def downgrade() -> None:
    """Drop the views, then the tables (their indexes and sequences go with them)."""
    for view in ("product_performance", "customer_lifetime_value", "sales_summary"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    for table in ("order_items", "orders", "products", "customers"):
        op.execute(f"DROP TABLE IF EXISTS {table}")

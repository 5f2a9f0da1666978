"""The Sales domain's data products: its four tables and three analytics views.

Column order, types and nullability mirror migrations/sales (0001_sales_schema); each view's
`definition` is the comment written above it there, word for word.
"""

from __future__ import annotations

import datetime as dt

from services.sales.writes import WRITES
from shared.declarations.checks import (
    EMAIL_PATTERN,
    AcceptedValues,
    Consistency,
    Freshness,
    NotNull,
    Outliers,
    Pattern,
    Range,
    References,
    RowCount,
    Severity,
    Unique,
    not_null,
)
from shared.declarations.products import (
    Classification,
    Column,
    ColumnType,
    Domain,
    Product,
    pseudonymous_key,
)

PII = Classification.PII
CONFIDENTIAL = Classification.CONFIDENTIAL
CRITICAL = Severity.CRITICAL
MINOR = Severity.MINOR

# Freshness SLAs: how old the newest row may be. Orders come 6 to 21 days apart (B2B): two
# weeks without one means the feed or the sales stopped (a week would flag a quarter of the
# sample's days); customers are created or updated at least monthly.
ORDERS_FRESHNESS = dt.timedelta(days=14)
CUSTOMERS_FRESHNESS = dt.timedelta(days=30)

SALES_SUMMARY_DEFINITION = (
    "One row per calendar month of order_date that has orders, counting every order except "
    "Cancelled ones. month is the first day of the month; order_count the number of orders; "
    "total_revenue the sum of their total_amount; avg_order_value the average total_amount "
    "rounded to 2 decimals; unique_customers the number of distinct customers who ordered "
    "that month."
)

CUSTOMER_LIFETIME_VALUE_DEFINITION = (
    "One row per customer, including customers without orders, counting every order except "
    "Cancelled ones. total_orders is the number of orders; lifetime_value the sum of their "
    "total_amount (0.00 without orders); avg_order_value the average total_amount rounded to "
    "2 decimals (NULL without orders); last_order_date the latest order_date (NULL without "
    "orders)."
)

PRODUCT_PERFORMANCE_DEFINITION = (
    "One row per product, including products never sold, counting the order lines of every "
    "order except Cancelled ones. times_sold is the number of distinct orders containing the "
    "product; total_quantity the sum of quantity (0 when unsold); total_revenue the sum of "
    "line_total (0.00 when unsold); avg_discount the average discount_percent over those order "
    "lines, unweighted, rounded to 2 decimals (NULL when unsold)."
)

CUSTOMER_EMAIL = Column(
    "email",
    ColumnType.TEXT,
    "Email address of the customer's main contact; unique, compared case-insensitively.",
    classification=PII,
    unique=True,
    sortable=False,
    max_length=254,  # the longest address SMTP carries (RFC 5321)
)

CUSTOMERS = Product(
    name="customers",
    source="customers",
    description="Customer master data: the companies that buy from us, with contact details.",
    key=("customer_id",),
    columns=(
        Column(
            "customer_id",
            ColumnType.INTEGER,
            "Surrogate identifier of the customer.",
            unique=True,
        ),
        Column(
            "customer_name",
            ColumnType.TEXT,
            "Legal or trading name of the customer company.",
            classification=CONFIDENTIAL,
            sortable=False,
        ),
        CUSTOMER_EMAIL,
        pseudonymous_key("email_key", CUSTOMER_EMAIL),
        Column(
            "phone",
            ColumnType.TEXT,
            "Phone number of the customer's main contact, in international format.",
            classification=PII,
            nullable=True,
            sortable=False,
        ),
        Column("country", ColumnType.TEXT, "Country the customer is based in.", sortable=False),
        Column(
            "industry",
            ColumnType.TEXT,
            "Industry the customer operates in, such as Finance or Healthcare, when known.",
            nullable=True,
            sortable=False,
        ),
        Column(
            "company_size",
            ColumnType.TEXT,
            "Size segment of the customer: Enterprise, Mid-Market or Small.",
            sortable=False,
        ),
        Column("created_at", ColumnType.TIMESTAMP, "When the customer record was created."),
        Column(
            "updated_at",
            ColumnType.TIMESTAMP,
            "When the customer record last changed.",
            sortable=False,
        ),
    ),
    checks=(
        *not_null("customer_id", severity=CRITICAL),
        *not_null("customer_name", "email", "country", "company_size", "created_at", "updated_at"),
        Unique(columns=("customer_id",), severity=CRITICAL),
        Unique(columns=("email",)),
        Pattern(column="email", regex=EMAIL_PATTERN, label="email"),
        AcceptedValues(column="company_size", values=("Enterprise", "Mid-Market", "Small")),
        Freshness(column="updated_at", max_age=CUSTOMERS_FRESHNESS, severity=MINOR),
        RowCount(minimum=1, maximum=100_000),
    ),
    freshness=CUSTOMERS_FRESHNESS,
)

PRODUCTS = Product(
    name="products",
    source="products",
    description="Product catalog: the software and infrastructure we sell, with list prices.",
    key=("product_id",),
    columns=(
        Column(
            "product_id",
            ColumnType.INTEGER,
            "Surrogate identifier of the product.",
            unique=True,
        ),
        Column("product_name", ColumnType.TEXT, "Name of the product as sold.", sortable=False),
        Column(
            "category",
            ColumnType.TEXT,
            "Product category: Software or Infrastructure.",
            sortable=False,
        ),
        Column("price", ColumnType.MONEY, "List price of one unit, in US dollars.", sortable=False),
        Column("cost", ColumnType.MONEY, "Our cost of one unit, in US dollars.", sortable=False),
        Column(
            "description",
            ColumnType.TEXT,
            "Short marketing description of the product.",
            nullable=True,
            sortable=False,
            max_length=1000,
        ),
    ),
    checks=(
        *not_null("product_id", severity=CRITICAL),
        *not_null("product_name", "category", "price", "cost"),
        Unique(columns=("product_id",), severity=CRITICAL),
        Unique(columns=("product_name",), severity=MINOR),
        AcceptedValues(column="category", values=("Software", "Infrastructure")),
        Range(column="price", minimum=0),
        Range(column="cost", minimum=0),
        Consistency(
            rule="cost_not_above_price",
            violations="t.cost > t.price",
            columns=("price", "cost"),
            severity=MINOR,
        ),
        RowCount(minimum=1, maximum=10_000),
    ),
)

ORDERS = Product(
    name="orders",
    source="orders",
    description="Sales orders: one row per order placed by a customer.",
    key=("order_id",),
    columns=(
        Column(
            "order_id",
            ColumnType.INTEGER,
            "Surrogate identifier of the order.",
            unique=True,
        ),
        Column("customer_id", ColumnType.INTEGER, "The customer who placed the order."),
        Column("order_date", ColumnType.DATE, "Date the order was placed."),
        Column(
            "order_status",
            ColumnType.TEXT,
            "Status of the order: Pending, Processing, Completed or Cancelled.",
            sortable=False,
        ),
        Column(
            "total_amount",
            ColumnType.MONEY,
            "Order total in US dollars: the sum of its order lines' line_total.",
        ),
        Column(
            "payment_method",
            ColumnType.TEXT,
            "How the customer pays, such as Wire Transfer or Purchase Order.",
            sortable=False,
        ),
        Column(
            "sales_rep",
            ColumnType.TEXT,
            "Name of the sales representative who owns the order.",
            sortable=False,
        ),
        Column(
            "region",
            ColumnType.TEXT,
            "Sales region of the customer's country: North America, Europe or Asia Pacific.",
            sortable=False,
        ),
    ),
    checks=(
        *not_null("order_id", severity=CRITICAL),
        *not_null(
            "customer_id",
            "order_date",
            "order_status",
            "total_amount",
            "payment_method",
            "sales_rep",
            "region",
        ),
        Unique(columns=("order_id",), severity=CRITICAL),
        AcceptedValues(
            column="order_status", values=("Pending", "Processing", "Completed", "Cancelled")
        ),
        AcceptedValues(column="region", values=("North America", "Europe", "Asia Pacific")),
        Range(column="total_amount", minimum=0),
        References(
            columns=("customer_id",),
            target_table="customers",
            target_columns=("customer_id",),
            severity=CRITICAL,
        ),
        Consistency(
            rule="total_is_sum_of_lines",
            description="total_amount equals the sum of the order's line_total, to the cent.",
            violations=(
                "t.total_amount <> coalesce((SELECT sum(i.line_total) FROM order_items AS i "
                "WHERE i.order_id = t.order_id), 0)"
            ),
            columns=("total_amount",),
            reads=("order_items",),
            severity=CRITICAL,
        ),
        Freshness(column="order_date", max_age=ORDERS_FRESHNESS),
        RowCount(minimum=1, maximum=10_000_000),
        Outliers(column="total_amount", threshold=3.5, severity=MINOR),
    ),
    freshness=ORDERS_FRESHNESS,
)

ORDER_ITEMS = Product(
    name="order-items",
    source="order_items",
    description="Order lines: the products, quantities, prices and discounts of each order.",
    key=("item_id",),
    columns=(
        Column(
            "item_id",
            ColumnType.INTEGER,
            "Surrogate identifier of the order line.",
            unique=True,
        ),
        Column("order_id", ColumnType.INTEGER, "The order this line belongs to."),
        Column("product_id", ColumnType.INTEGER, "The product sold on this line."),
        Column(
            "quantity", ColumnType.INTEGER, "Number of units sold; always positive.", sortable=False
        ),
        Column(
            "unit_price",
            ColumnType.MONEY,
            "Price of one unit on this line before discount, in US dollars.",
            sortable=False,
        ),
        Column(
            "discount_percent",
            ColumnType.DECIMAL,
            "Discount on this line, in percent from 0 to 100.",
            precision=5,
            scale=2,
            sortable=False,
        ),
        Column(
            "line_total",
            ColumnType.MONEY,
            "quantity x unit_price x (1 - discount_percent/100), rounded half-up to cents.",
            sortable=False,
        ),
    ),
    checks=(
        *not_null("item_id", severity=CRITICAL),
        *not_null(
            "order_id", "product_id", "quantity", "unit_price", "discount_percent", "line_total"
        ),
        Unique(columns=("item_id",), severity=CRITICAL),
        Range(column="quantity", minimum=1),
        Range(column="unit_price", minimum=0),
        Range(column="discount_percent", minimum=0, maximum=100),
        Range(column="line_total", minimum=0),
        References(
            columns=("order_id",),
            target_table="orders",
            target_columns=("order_id",),
            severity=CRITICAL,
        ),
        References(
            columns=("product_id",),
            target_table="products",
            target_columns=("product_id",),
            severity=CRITICAL,
        ),
        Consistency(
            rule="line_total_formula",
            description="line_total = quantity x unit_price x (1 - discount_percent/100), "
            "rounded half up to cents.",
            violations=(
                "t.line_total <> round(t.quantity * t.unit_price "
                "* (1 - t.discount_percent / 100), 2)"
            ),
            columns=("quantity", "unit_price", "discount_percent", "line_total"),
        ),
        RowCount(minimum=1, maximum=50_000_000),
    ),
)

SALES_SUMMARY = Product(
    name="sales-summary",
    source="sales_summary",
    description="Monthly sales: orders, revenue, average order value and distinct customers.",
    key=("month",),
    is_table=False,
    definition=SALES_SUMMARY_DEFINITION,
    columns=(
        Column(
            "month",
            ColumnType.DATE,
            "First day of the calendar month the orders were placed in.",
            unique=True,
        ),
        Column(
            "order_count",
            ColumnType.INTEGER,
            "Number of orders placed in the month, Cancelled ones excluded.",
        ),
        Column(
            "total_revenue",
            ColumnType.MONEY,
            "Sum of total_amount of the month's orders, in US dollars.",
        ),
        Column(
            "avg_order_value",
            ColumnType.MONEY,
            "Average total_amount of the month's orders, rounded to cents.",
        ),
        Column(
            "unique_customers",
            ColumnType.INTEGER,
            "Number of distinct customers who ordered in the month.",
        ),
    ),
    checks=(
        NotNull(column="month", severity=CRITICAL),
        Unique(columns=("month",), severity=CRITICAL),
        Range(column="total_revenue", minimum=0, severity=MINOR),
    ),
)

CUSTOMER_LIFETIME_VALUE = Product(
    name="customer-lifetime-value",
    source="customer_lifetime_value",
    description="Per customer: number of orders, lifetime revenue, average order, last order.",
    key=("customer_id",),
    is_table=False,
    definition=CUSTOMER_LIFETIME_VALUE_DEFINITION,
    columns=(
        Column("customer_id", ColumnType.INTEGER, "The customer.", unique=True),
        Column(
            "customer_name",
            ColumnType.TEXT,
            "Legal or trading name of the customer company.",
            classification=CONFIDENTIAL,
        ),
        Column("country", ColumnType.TEXT, "Country the customer is based in."),
        Column(
            "industry",
            ColumnType.TEXT,
            "Industry the customer operates in, when known.",
            nullable=True,
        ),
        Column(
            "total_orders",
            ColumnType.INTEGER,
            "Number of the customer's orders, Cancelled ones excluded; 0 without orders.",
        ),
        Column(
            "lifetime_value",
            ColumnType.MONEY,
            "Sum of total_amount of the customer's orders, in US dollars; 0.00 without orders.",
        ),
        Column(
            "avg_order_value",
            ColumnType.MONEY,
            "Average total_amount of the customer's orders, rounded to cents; null without orders.",
            nullable=True,
        ),
        Column(
            "last_order_date",
            ColumnType.DATE,
            "Date of the customer's latest order; null without orders.",
            nullable=True,
        ),
    ),
    checks=(
        NotNull(column="customer_id", severity=CRITICAL),
        Unique(columns=("customer_id",), severity=CRITICAL),
        Range(column="lifetime_value", minimum=0, severity=MINOR),
    ),
)

PRODUCT_PERFORMANCE = Product(
    name="product-performance",
    source="product_performance",
    description="Per product: orders containing it, units sold, revenue and average discount.",
    key=("product_id",),
    is_table=False,
    definition=PRODUCT_PERFORMANCE_DEFINITION,
    columns=(
        Column("product_id", ColumnType.INTEGER, "The product.", unique=True),
        Column("product_name", ColumnType.TEXT, "Name of the product as sold."),
        Column("category", ColumnType.TEXT, "Product category: Software or Infrastructure."),
        Column(
            "times_sold",
            ColumnType.INTEGER,
            "Number of distinct orders containing the product, Cancelled ones excluded.",
        ),
        Column(
            "total_quantity",
            ColumnType.INTEGER,
            "Units of the product sold on those orders; 0 when unsold.",
        ),
        Column(
            "total_revenue",
            ColumnType.MONEY,
            "Sum of line_total of the product's order lines, in US dollars; 0.00 when unsold.",
        ),
        Column(
            "avg_discount",
            ColumnType.DECIMAL,
            "Average discount_percent of the product's order lines, rounded to 2 decimals; "
            "null when unsold.",
            nullable=True,
            precision=5,
            scale=2,
        ),
    ),
    checks=(
        NotNull(column="product_id", severity=CRITICAL),
        Unique(columns=("product_id",), severity=CRITICAL),
        Range(column="avg_discount", minimum=0, maximum=100, severity=MINOR),
    ),
)

DOMAIN = Domain(
    name="sales",
    title="Sales",
    description="Customer orders and revenue data",
    owner="sales-team@company.com",
    update_frequency="real-time",
    data_classification="confidential",
    database="sales_db",
    products=(
        CUSTOMERS,
        PRODUCTS,
        ORDERS,
        ORDER_ITEMS,
        SALES_SUMMARY,
        CUSTOMER_LIFETIME_VALUE,
        PRODUCT_PERFORMANCE,
    ),
    writes=WRITES,
    port=8001,
    rate_limit_per_minute=1000,
)

"""What the Sales team writes through the API: customers, and orders with their items, priced
by the server from the current catalogue (shared.writing.inputs turns this into endpoints)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from services.sales.sample import REGION_BY_COUNTRY
from shared.writing.inputs import (
    Children,
    FieldError,
    InvalidBody,
    TableWrites,
    Transitions,
    WriteContext,
    WriteLogic,
)

CENT = Decimal("0.01")

CUSTOMER_FIELDS = ("customer_name", "email", "phone", "country", "industry", "company_size")

CUSTOMERS = TableWrites(
    product="customers",
    accepted=CUSTOMER_FIELDS,
    updatable=CUSTOMER_FIELDS,
    deletable=True,  # not while orders refer to it (409)
)

# Pending -> Processing -> Completed; an order not completed may be cancelled; Completed and
# Cancelled are final.
ORDER_STATUSES = Transitions(
    column="order_status",
    allowed={"Pending": ("Processing", "Cancelled"), "Processing": ("Completed", "Cancelled")},
    initial=("Pending",),
)


def line_total(quantity: int, unit_price: Decimal, discount_percent: Decimal) -> Decimal:
    """quantity x unit_price x (1 - discount_percent/100), rounded half up to cents."""
    with localcontext() as exact:
        exact.prec = 60
        gross = quantity * unit_price * (1 - discount_percent / 100)
        return gross.quantize(CENT, rounding=ROUND_HALF_UP)


class OrderPricing(WriteLogic):
    """A new order: its customer and products must exist; each line is priced at the
    product's current price; the total is the sum of the lines; the region follows the
    customer's country; the date defaults to the transaction's day (UTC)."""

    async def before_create(
        self, context: WriteContext, row: dict[str, Any], children: list[dict[str, Any]]
    ) -> None:
        customer_id = row["customer_id"]
        customers = await context.rows("customers", [customer_id], ("country",))
        errors = []
        region = None
        if customer_id not in customers:
            errors.append(FieldError("customer_id", f"no customer has customer_id {customer_id}"))
        else:
            country = customers[customer_id]["country"]
            region = REGION_BY_COUNTRY.get(country)
            if region is None:
                errors.append(
                    FieldError(
                        "customer_id",
                        f"customer {customer_id} is in '{country}', which is in no sales region; "
                        f"known countries: {', '.join(REGION_BY_COUNTRY)}",
                    )
                )
        wanted = sorted({item["product_id"] for item in children})
        prices = await context.rows("products", wanted, ("price",))
        errors += [
            FieldError(f"items.{i}.product_id", f"no product has product_id {item['product_id']}")
            for i, item in enumerate(children)
            if item["product_id"] not in prices
        ]
        if errors:
            raise InvalidBody(errors)
        for item in children:
            item["unit_price"] = prices[item["product_id"]]["price"]
            item["line_total"] = line_total(
                item["quantity"], item["unit_price"], item["discount_percent"]
            )
        row["total_amount"] = sum((item["line_total"] for item in children), Decimal("0.00"))
        row["region"] = region
        if row.get("order_date") is None:
            row["order_date"] = context.now.date()


ORDERS = TableWrites(
    product="orders",
    accepted=("customer_id", "order_date", "payment_method", "sales_rep"),
    filled=("order_date",),
    updatable=("order_status", "payment_method", "sales_rep"),
    transitions=ORDER_STATUSES,
    deletable=True,  # with its items
    children=Children(
        field="items",
        product="order-items",
        parent_key="order_id",
        accepted=("product_id", "quantity", "discount_percent"),
        defaults={"discount_percent": Decimal("0.00")},
    ),
    logic=OrderPricing(),
)

WRITES: tuple[TableWrites, ...] = (CUSTOMERS, ORDERS)

"""What the Marketing team writes through the API: campaigns, leads along their funnel, and
the daily upserts of campaign metrics and website traffic (shared.writing.inputs turns this into
endpoints)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from shared.writing.inputs import RowRule, TableWrites, Transitions, WriteContext, WriteLogic

CAMPAIGN_FIELDS = (
    "campaign_name",
    "campaign_type",
    "channel",
    "start_date",
    "end_date",
    "budget",
    "spent",
    "status",
    "target_audience",
)

# Draft -> Active <-> Paused, Active or Paused -> Completed; Completed is final.
CAMPAIGN_STATUSES = Transitions(
    column="status",
    allowed={
        "Draft": ("Active",),
        "Active": ("Paused", "Completed"),
        "Paused": ("Active", "Completed"),
    },
    initial=("Draft", "Active"),
)

CAMPAIGNS = TableWrites(
    product="campaigns",
    accepted=CAMPAIGN_FIELDS,
    updatable=CAMPAIGN_FIELDS,
    defaults={"spent": Decimal("0.00")},
    transitions=CAMPAIGN_STATUSES,
    deletable=True,  # not while leads or metrics refer to it (409)
    rules=(
        RowRule("spent", lambda r: r["spent"] <= r["budget"], "spent may not exceed budget"),
        RowRule(
            "end_date",
            lambda r: r["end_date"] >= r["start_date"],
            "end_date may not be before start_date",
        ),
    ),
)

LEAD_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "company",
    "job_title",
    "country",
    "lead_source",
    "lead_score",
    "status",
    "campaign_id",
)

# Down the funnel only, skipping steps if need be: New -> Nurturing -> Qualified -> Converted;
# any lead not converted may be Lost; Converted and Lost are final. Converting sets
# converted_at. A new lead starts New, Nurturing or Qualified.
LEAD_STATUSES = Transitions(
    column="status",
    allowed={
        "New": ("Nurturing", "Qualified", "Converted", "Lost"),
        "Nurturing": ("Qualified", "Converted", "Lost"),
        "Qualified": ("Converted", "Lost"),
    },
    initial=("New", "Nurturing", "Qualified"),
    stamps={"Converted": "converted_at"},
)

LEADS = TableWrites(
    product="leads",
    accepted=LEAD_FIELDS,
    updatable=LEAD_FIELDS,
    transitions=LEAD_STATUSES,
    deletable=True,
)


class ConversionRate(WriteLogic):
    """A day's conversion_rate = conversions / clicks x 100, rounded half up to 2 decimals;
    null on a day without clicks (the product's definition)."""

    async def before_create(
        self, context: WriteContext, row: dict[str, Any], children: list[dict[str, Any]]
    ) -> None:
        clicks = row["clicks"]
        row["conversion_rate"] = (
            (Decimal(row["conversions"] * 100) / clicks).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP
            )
            if clicks
            else None
        )


CAMPAIGN_METRICS = TableWrites(
    product="campaign-metrics",
    accepted=(
        "campaign_id",
        "metric_date",
        "impressions",
        "clicks",
        "conversions",
        "cost_per_click",
    ),
    create=False,
    deletable=True,
    upsert_key=("campaign_id", "metric_date"),
    rules=(
        RowRule(
            "clicks", lambda r: r["clicks"] <= r["impressions"], "clicks may not exceed impressions"
        ),
        RowRule(
            "conversions",
            lambda r: r["conversions"] <= r["clicks"],
            "conversions may not exceed clicks",
        ),
        RowRule(
            "cost_per_click",
            lambda r: r["clicks"] > 0 or r["cost_per_click"] is None,
            "cost_per_click must be null on a day without clicks",
        ),
    ),
    logic=ConversionRate(),
)

WEBSITE_TRAFFIC = TableWrites(
    product="website-traffic",
    accepted=(
        "visit_date",
        "page_url",
        "source",
        "visitors",
        "page_views",
        "bounce_rate",
        "avg_time_on_page",
    ),
    create=False,
    deletable=True,
    upsert_key=("visit_date", "source", "page_url"),
    upsert_query=("page_url",),
    rules=(
        RowRule(
            "page_views",
            lambda r: r["page_views"] >= r["visitors"],
            "page_views may not be fewer than visitors",
        ),
    ),
)

WRITES: tuple[TableWrites, ...] = (CAMPAIGNS, LEADS, CAMPAIGN_METRICS, WEBSITE_TRAFFIC)

"""The Marketing sample data (PRODUCT.md section 6), checked in pure Python: no database."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.marketing.products import DOMAIN
from services.marketing.sample import (
    PAGES,
    SOURCES,
    daily_spend_cents,
    metric_days,
    round_half_up,
    sample,
    split_cents,
    window,
)

SEED_AS_OF = dt.date(2024, 10, 18)
OTHER_AS_OF = dt.date(2025, 3, 1)  # a window across February: only 181 days
AS_OF_DATES = [SEED_AS_OF, OTHER_AS_OF]

# The Sales domain's customers that the three Converted leads became, and the days before
# as_of their customer records (and so the leads' converted_at) were created, at 10:00 UTC.
SALES_CUSTOMER_EMAILS = {
    "j.carter@northwind-analytics.com": 120,
    "m.schneider@rheintal-systeme.de": 90,
    "o.bennett@harbourline.co.uk": 60,
}

# campaign_id: channel, start and end (days from as_of), budget, spent, status
CAMPAIGNS = {
    1: ("LinkedIn", -175, -115, "95000.00", "92487.35", "Completed"),
    2: ("Webinar", -165, -100, "40000.00", "38212.65", "Completed"),
    3: ("Google Ads", -170, 45, "120000.00", "78400.00", "Active"),
    4: ("Email", -160, -20, "25000.00", "24100.00", "Completed"),
    5: ("LinkedIn", -120, 30, "85000.00", "41300.00", "Active"),
    6: ("Events", -110, -80, "60000.00", "27500.00", "Completed"),
    7: ("Google Ads", -90, 60, "50000.00", "16800.00", "Active"),
    8: ("Webinar", -45, 20, "30000.00", "8200.00", "Active"),
}
METRIC_DAYS = {1: 61, 2: 66, 3: 171, 4: 141, 5: 121, 6: 31, 7: 91, 8: 46}

# What the views must return for the sample (any as_of): the oracle for database tests.
CAMPAIGN_PERFORMANCE = {
    # campaign_id: remaining_budget, budget_utilization_pct, total, converted, conversion_rate
    1: ("2512.65", "97.36", 3, 1, "33.33"),
    2: ("1787.35", "95.53", 2, 1, "50.00"),
    3: ("41600.00", "65.33", 3, 1, "33.33"),
    4: ("900.00", "96.40", 3, 0, "0.00"),
    5: ("43700.00", "48.59", 2, 0, "0.00"),
    6: ("32500.00", "45.83", 1, 0, "0.00"),
    7: ("33200.00", "33.60", 0, 0, None),
    8: ("21800.00", "27.33", 1, 0, "0.00"),
}
LEAD_FUNNEL = {
    # status: lead_count, avg_lead_score, campaigns_contributing
    "New": (4, "31.25", 4),
    "Nurturing": (4, "55.25", 4),
    "Qualified": (4, "76.75", 4),
    "Converted": (3, "88.33", 3),
}

EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIGRATION = Path(__file__).resolve().parent.parent / (
    "migrations/marketing/versions/0001_marketing_schema.py"
)


@pytest.fixture(scope="module", params=AS_OF_DATES, ids=str)
def as_of(request: pytest.FixtureRequest) -> dt.date:
    return request.param


@pytest.fixture(scope="module")
def rows(as_of: dt.date) -> dict[str, list[dict[str, Any]]]:
    return sample(as_of)


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


# --- window and shape ------------------------------------------------------------------------


def test_window_is_six_calendar_months_ending_at_as_of_start_exclusive() -> None:
    assert window(SEED_AS_OF) == (dt.date(2024, 4, 19), dt.date(2024, 10, 18))
    assert window(OTHER_AS_OF) == (dt.date(2024, 9, 2), dt.date(2025, 3, 1))
    # a month end clamps to the shorter month: Aug 31 - 6 months = Feb 29 (leap year)
    assert window(dt.date(2024, 8, 31)) == (dt.date(2024, 3, 1), dt.date(2024, 8, 31))


def test_tables_come_in_load_order(rows: dict[str, list[dict[str, Any]]]) -> None:
    assert list(rows) == ["campaigns", "leads", "campaign_metrics", "website_traffic"]


def test_every_row_has_exactly_the_declared_columns_in_order(
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    tables = {p.source: p for p in DOMAIN.products if p.is_table}
    assert set(tables) == set(rows)
    for table, table_rows in rows.items():
        expected = [c.name for c in tables[table].stored_columns]
        assert all(list(row) == expected for row in table_rows), table


def test_ids_are_explicit_and_consecutive(rows: dict[str, list[dict[str, Any]]]) -> None:
    keys = {"campaigns": "campaign_id", "leads": "lead_id"}
    keys |= {"campaign_metrics": "metric_id", "website_traffic": "traffic_id"}
    for table, key in keys.items():
        assert [r[key] for r in rows[table]] == list(range(1, len(rows[table]) + 1)), table


def test_non_nullable_columns_have_values(rows: dict[str, list[dict[str, Any]]]) -> None:
    tables = {p.source: p for p in DOMAIN.products if p.is_table}
    for table, table_rows in rows.items():
        required = [c.name for c in tables[table].stored_columns if not c.nullable]
        for row in table_rows:
            assert all(row[name] is not None for name in required), (table, row)


# --- campaigns -------------------------------------------------------------------------------


def test_eight_campaigns_with_the_seed_budget_and_spend(
    rows: dict[str, list[dict[str, Any]]], as_of: dt.date
) -> None:
    campaigns = rows["campaigns"]
    assert len(campaigns) == 8
    assert sum(c["budget"] for c in campaigns) == Decimal("505000.00")
    assert sum(c["spent"] for c in campaigns) == Decimal("327000.00")
    actual = {
        c["campaign_id"]: (
            c["channel"],
            (c["start_date"] - as_of).days,
            (c["end_date"] - as_of).days,
            str(c["budget"]),
            str(c["spent"]),
            c["status"],
        )
        for c in campaigns
    }
    assert actual == CAMPAIGNS


def test_spent_never_above_budget_and_dates_ordered(
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    for c in rows["campaigns"]:
        assert Decimal(0) <= c["spent"] <= c["budget"]
        assert c["end_date"] >= c["start_date"]
        assert c["budget"] == c["budget"].quantize(Decimal("0.01"))
        assert c["spent"] == c["spent"].quantize(Decimal("0.01"))


def test_status_is_active_until_the_end_date_then_completed(
    rows: dict[str, list[dict[str, Any]]], as_of: dt.date
) -> None:
    for c in rows["campaigns"]:
        assert c["status"] == ("Active" if c["end_date"] >= as_of else "Completed")
    assert Counter(c["status"] for c in rows["campaigns"]) == {"Active": 4, "Completed": 4}


def test_campaigns_start_inside_the_window(
    rows: dict[str, list[dict[str, Any]]], as_of: dt.date
) -> None:
    first, _ = window(as_of)
    assert all(first <= c["start_date"] <= as_of for c in rows["campaigns"])


def test_channels_are_shared_and_single(rows: dict[str, list[dict[str, Any]]]) -> None:
    channels = Counter(c["channel"] for c in rows["campaigns"])
    assert channels == {"LinkedIn": 2, "Google Ads": 2, "Webinar": 2, "Email": 1, "Events": 1}
    # a channel with a single campaign and several leads (each campaign's spend counted once)
    email_campaigns = [c["campaign_id"] for c in rows["campaigns"] if c["channel"] == "Email"]
    email_leads = [lead for lead in rows["leads"] if lead["campaign_id"] in email_campaigns]
    assert len(email_campaigns) == 1
    assert len(email_leads) == 3


# --- leads -----------------------------------------------------------------------------------


def test_fifteen_leads_in_four_statuses(rows: dict[str, list[dict[str, Any]]]) -> None:
    leads = rows["leads"]
    assert len(leads) == 15
    assert Counter(lead["status"] for lead in leads) == {
        "New": 4,
        "Nurturing": 4,
        "Qualified": 4,
        "Converted": 3,
    }


def test_lead_fields_are_in_range(rows: dict[str, list[dict[str, Any]]]) -> None:
    campaign_ids = {c["campaign_id"] for c in rows["campaigns"]}
    emails = [lead["email"] for lead in rows["leads"]]
    assert len(set(emails)) == 15
    assert len({e.strip().lower() for e in emails}) == 15
    for lead in rows["leads"]:
        assert 0 <= lead["lead_score"] <= 100
        assert lead["campaign_id"] in campaign_ids
        assert EMAIL_SHAPE.match(lead["email"]), lead["email"]


def test_converted_at_is_set_exactly_for_converted_leads(
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    for lead in rows["leads"]:
        assert (lead["converted_at"] is not None) == (lead["status"] == "Converted")


def test_timestamps_are_utc(rows: dict[str, list[dict[str, Any]]]) -> None:
    for lead in rows["leads"]:
        for stamp in (lead["created_at"], lead["converted_at"]):
            if stamp is not None:
                assert stamp.utcoffset() == dt.timedelta(0)


def test_lead_created_within_its_campaign_run_and_before_as_of(
    rows: dict[str, list[dict[str, Any]]], as_of: dt.date
) -> None:
    campaigns = {c["campaign_id"]: c for c in rows["campaigns"]}
    for lead in rows["leads"]:
        campaign = campaigns[lead["campaign_id"]]
        created = lead["created_at"].date()
        assert campaign["start_date"] <= created <= campaign["end_date"], lead["lead_id"]
        assert created < as_of


def test_converted_leads_are_the_three_sales_customers(
    rows: dict[str, list[dict[str, Any]]], as_of: dt.date
) -> None:
    converted = [lead for lead in rows["leads"] if lead["status"] == "Converted"]
    by_email = {lead["email"].strip().lower(): lead for lead in converted}
    assert set(by_email) == set(SALES_CUSTOMER_EMAILS)
    # the mesh joins case-insensitively: one lead email differs in case on purpose
    assert by_email["j.carter@northwind-analytics.com"]["email"] == (
        "J.Carter@Northwind-Analytics.com"
    )
    assert [(lead["first_name"], lead["last_name"], lead["company"], lead["country"]) for lead in
            converted] == [
        ("John", "Carter", "Northwind Analytics", "USA"),
        ("Maria", "Schneider", "Rheintal Systeme GmbH", "Germany"),
        ("Oliver", "Bennett", "Harbourline Logistics", "UK"),
    ]  # fmt: skip
    for email, days_back in SALES_CUSTOMER_EMAILS.items():
        lead = by_email[email]
        expected = dt.datetime.combine(
            as_of - dt.timedelta(days=days_back), dt.time(10, 0), tzinfo=dt.UTC
        )
        assert lead["converted_at"] == expected
        lead_days = lead["converted_at"] - lead["created_at"]
        assert dt.timedelta(days=20) <= lead_days <= dt.timedelta(days=45)
    assert len({lead["campaign_id"] for lead in converted}) == 3


def test_other_leads_match_no_sales_customer(rows: dict[str, list[dict[str, Any]]]) -> None:
    others = [lead for lead in rows["leads"] if lead["status"] != "Converted"]
    assert len(others) == 12
    assert not {lead["email"].strip().lower() for lead in others} & set(SALES_CUSTOMER_EMAILS)


# --- campaign_metrics ------------------------------------------------------------------------


def test_one_metrics_row_per_campaign_per_active_day(
    rows: dict[str, list[dict[str, Any]]], as_of: dt.date
) -> None:
    first, last = window(as_of)
    metrics = rows["campaign_metrics"]
    assert len(metrics) == sum(METRIC_DAYS.values()) == 728
    for c in rows["campaigns"]:
        dates = [m["metric_date"] for m in metrics if m["campaign_id"] == c["campaign_id"]]
        expected = _days(max(c["start_date"], first), min(c["end_date"], last))
        assert dates == expected == metric_days(c, as_of)
        assert len(dates) == METRIC_DAYS[c["campaign_id"]]


def test_daily_counts_are_funnel_shaped(rows: dict[str, list[dict[str, Any]]]) -> None:
    for m in rows["campaign_metrics"]:
        assert m["impressions"] > m["clicks"] > m["conversions"] >= 0, m


def test_daily_spend_splits_each_campaign_spent_exactly(
    rows: dict[str, list[dict[str, Any]]], as_of: dt.date
) -> None:
    for c in rows["campaigns"]:
        cents = daily_spend_cents(c, as_of)
        assert len(cents) == METRIC_DAYS[c["campaign_id"]]
        assert sum(cents) == int(c["spent"] * 100)
        assert min(cents) > 0


def test_cost_per_click_and_conversion_rate_follow_their_formulas(
    rows: dict[str, list[dict[str, Any]]], as_of: dt.date
) -> None:
    """cost_per_click = round(day spend / clicks, 2); conversion_rate = round(conv/clicks*100)."""
    for c in rows["campaigns"]:
        metrics = [m for m in rows["campaign_metrics"] if m["campaign_id"] == c["campaign_id"]]
        for m, cents in zip(metrics, daily_spend_cents(c, as_of), strict=True):
            assert m["cost_per_click"] == round_half_up(Decimal(cents) / 100 / m["clicks"])
            rate = Decimal(m["conversions"]) * 100 / m["clicks"]
            assert m["conversion_rate"] == round_half_up(rate)


def test_spent_is_reconstructible_from_the_metrics_within_rounding(
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    """Sum of cost_per_click x clicks is within half a cent per click of the campaign's spent."""
    for c in rows["campaigns"]:
        metrics = [m for m in rows["campaign_metrics"] if m["campaign_id"] == c["campaign_id"]]
        reconstructed = sum(m["cost_per_click"] * m["clicks"] for m in metrics)
        tolerance = Decimal("0.005") * sum(m["clicks"] for m in metrics)
        assert abs(reconstructed - c["spent"]) <= tolerance, c["campaign_id"]


def test_split_cents_is_exact_and_proportional() -> None:
    assert split_cents(100, [1, 1, 1]) == [34, 33, 33]
    assert split_cents(1001, [1, 3]) == [250, 751]
    assert split_cents(0, [5, 5]) == [0, 0]
    with pytest.raises(ValueError, match="cannot split 5 cents"):
        split_cents(5, [])


def test_round_half_up_matches_postgres_round() -> None:
    assert round_half_up(Decimal("2.345")) == Decimal("2.35")
    assert round_half_up(Decimal("2.355")) == Decimal("2.36")
    assert round_half_up(Decimal("33.3333")) == Decimal("33.33")


# --- website_traffic -------------------------------------------------------------------------


def test_traffic_has_one_row_per_day_page_and_source(
    rows: dict[str, list[dict[str, Any]]], as_of: dt.date
) -> None:
    first, last = window(as_of)
    days = _days(first, last)
    traffic = rows["website_traffic"]
    assert len(traffic) == len(days) * 5 * 4
    assert len(traffic) == {SEED_AS_OF: 3660, OTHER_AS_OF: 3620}[as_of]
    assert set(PAGES) == {"/", "/pricing", "/product", "/blog", "/contact"}
    assert set(SOURCES) == {"Organic", "Paid Search", "Social Media", "Email"}
    keys = [(t["visit_date"], t["page_url"], t["source"]) for t in traffic]
    assert keys == [(d, p, s) for d in days for p in PAGES for s in SOURCES]


def test_traffic_values_are_in_range(rows: dict[str, list[dict[str, Any]]]) -> None:
    for t in rows["website_traffic"]:
        assert t["visitors"] > 0
        assert t["page_views"] >= t["visitors"]
        assert Decimal(0) <= t["bounce_rate"] <= Decimal(100)
        assert t["avg_time_on_page"] > 0
        assert t["bounce_rate"].as_tuple().exponent == -2
        assert t["avg_time_on_page"].as_tuple().exponent == -2


# --- determinism -----------------------------------------------------------------------------


def test_same_as_of_gives_the_same_rows() -> None:
    assert sample(SEED_AS_OF) == sample(SEED_AS_OF)
    assert sample(OTHER_AS_OF) == sample(OTHER_AS_OF)


def test_another_as_of_gives_other_rows() -> None:
    seed, other = sample(SEED_AS_OF), sample(OTHER_AS_OF)
    for table in seed:
        assert seed[table] != other[table], table
    assert other["campaigns"][0]["start_date"] == OTHER_AS_OF - dt.timedelta(days=175)


def test_generated_figures_are_pinned_for_the_seed_period() -> None:
    """Regression pin: a change to the generators must show up here on purpose."""
    rows = sample(SEED_AS_OF)
    metrics, traffic = rows["campaign_metrics"], rows["website_traffic"]
    assert sum(m["impressions"] for m in metrics) == 4_630_529
    assert sum(m["clicks"] for m in metrics) == 83_173
    assert sum(m["conversions"] for m in metrics) == 3_817
    assert sum(t["visitors"] for t in traffic) == 162_151
    assert sum(t["page_views"] for t in traffic) == 306_536


# --- the views' expected output (the oracle for database tests) -------------------------------


def test_campaign_performance_of_the_sample(rows: dict[str, list[dict[str, Any]]]) -> None:
    def pct(part: Decimal, whole: Decimal) -> str | None:
        return None if whole == 0 else str(round_half_up(part * 100 / whole))

    actual = {}
    for c in rows["campaigns"]:
        leads = [lead for lead in rows["leads"] if lead["campaign_id"] == c["campaign_id"]]
        converted = sum(lead["status"] == "Converted" for lead in leads)
        actual[c["campaign_id"]] = (
            str(c["budget"] - c["spent"]),
            pct(c["spent"], c["budget"]),
            len(leads),
            converted,
            pct(Decimal(converted), Decimal(len(leads))),
        )
    assert actual == CAMPAIGN_PERFORMANCE


def test_lead_funnel_of_the_sample(rows: dict[str, list[dict[str, Any]]]) -> None:
    actual = {}
    for status in {lead["status"] for lead in rows["leads"]}:
        leads = [lead for lead in rows["leads"] if lead["status"] == status]
        average = Decimal(sum(lead["lead_score"] for lead in leads)) / len(leads)
        campaigns = {lead["campaign_id"] for lead in leads}
        actual[status] = (len(leads), str(round_half_up(average)), len(campaigns))
    assert actual == LEAD_FUNNEL


def test_view_definitions_are_the_migrations_comments() -> None:
    """Each view's product definition is, word for word, the SQL comment above the view."""
    text = MIGRATION.read_text()
    for product in DOMAIN.products:
        if product.is_table:
            continue
        block = text.split(f"CREATE VIEW {product.source} AS")[0].rsplit('"""', 1)[1]
        comment = " ".join(
            line.strip().removeprefix("--").strip() for line in block.strip().splitlines()
        )
        assert comment == product.definition, product.name

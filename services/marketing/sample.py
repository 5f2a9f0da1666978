"""Deterministic sample data of the Marketing domain: six months of activity ending at as_of.

Campaigns and leads are literal, dated by offsets back from the as-of date; daily metrics and
website traffic come from `random.Random` with fixed seeds. Same as-of date, same rows.

The data window is the six calendar months ending at as_of: from the day after
`as_of - 6 months` up to and including as_of (see `window`). Every campaign starts at most 175
days before as_of, so it lies wholly inside any window (which is always at least 181 days).

Three leads are Converted; they are customers of the Sales domain (joined on email, trimmed
and case-insensitively) and their converted_at is the customer's created_at there.
"""

from __future__ import annotations

import calendar
import datetime as dt
import random
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

WINDOW_MONTHS = 6
PAGES = ("/", "/pricing", "/product", "/blog", "/contact")
SOURCES = ("Organic", "Paid Search", "Social Media", "Email")
CONVERSION_TIME = dt.time(10, 0)  # a Converted lead's converted_at, on its day, in UTC

_CENT = Decimal("0.01")

# campaign_id, campaign_name, campaign_type, channel, start and end (days from as_of),
# budget, spent, target_audience. Status follows from the dates: Active while end >= as_of.
_CAMPAIGNS: tuple[tuple[int, str, str, str, int, int, str, str, str], ...] = (
    (1, "DataMesh Cloud Launch", "Product Launch", "LinkedIn", -175, -115,
     "95000.00", "92487.35", "CTOs and VPs of Engineering at enterprise software buyers"),
    (2, "Spring Analytics Webinar Series", "Webinar", "Webinar", -165, -100,
     "40000.00", "38212.65", "Data and analytics leaders in Europe"),
    (3, "Search: Data Platform Keywords", "PPC", "Google Ads", -170, 45,
     "120000.00", "78400.00", "In-market buyers searching for data platforms"),
    (4, "Enterprise Nurture Email Program", "Email Nurture", "Email", -160, -20,
     "25000.00", "24100.00", "Existing leads and newsletter subscribers"),
    (5, "Financial Services ABM", "Lead Gen", "LinkedIn", -120, 30,
     "85000.00", "41300.00", "IT leadership at banks and insurers"),
    (6, "Data Leaders Summit", "Event", "Events", -110, -80,
     "60000.00", "27500.00", "Enterprise data leaders, in person"),
    (7, "Display Retargeting", "Retargeting", "Google Ads", -90, 60,
     "50000.00", "16800.00", "Website visitors who did not convert"),
    (8, "Platform Deep-Dive Webinar", "Webinar", "Webinar", -45, 20,
     "30000.00", "8200.00", "Technical evaluators and architects"),
)  # fmt: skip

# lead_id, first_name, last_name, email, company, job_title, country, lead_source, lead_score,
# status, campaign_id, created (days before as_of, "HH:MM" UTC), converted (days before as_of).
_LEADS: tuple[
    tuple[int, str, str, str, str, str, str, str, int, str, int, int, str, int | None], ...
] = (
    (1, "John", "Carter", "J.Carter@Northwind-Analytics.com", "Northwind Analytics",
     "CTO", "USA", "LinkedIn", 92, "Converted", 1, 150, "14:20", 120),
    (2, "Priya", "Raman", "priya.raman@lumenforge.io", "Lumenforge",
     "VP of Engineering", "Canada", "LinkedIn", 78, "Qualified", 1, 160, "09:05", None),
    (3, "Lukas", "Meyer", "lukas.meyer@elbtal-data.de", "Elbtal Data GmbH",
     "Head of IT", "Germany", "LinkedIn", 55, "Nurturing", 1, 140, "11:40", None),
    (4, "Maria", "Schneider", "m.schneider@rheintal-systeme.de", "Rheintal Systeme GmbH",
     "CIO", "Germany", "Webinar", 88, "Converted", 2, 125, "16:45", 90),
    (5, "Sophie", "Laurent", "sophie.laurent@atelier-numerique.fr", "Atelier Numerique SAS",
     "Head of Data", "France", "Webinar", 61, "Nurturing", 2, 150, "08:30", None),
    (6, "Oliver", "Bennett", "o.bennett@harbourline.co.uk", "Harbourline Logistics",
     "Director of IT", "UK", "Google Ads", 85, "Converted", 3, 85, "11:30", 60),
    (7, "Ethan", "Brooks", "ethan.brooks@cobaltridge.com", "Cobalt Ridge Capital",
     "Data Engineering Manager", "USA", "Google Ads", 34, "New", 3, 6, "15:10", None),
    (8, "Chloe", "Nguyen", "chloe.nguyen@southerncrossfreight.com.au", "Southern Cross Freight",
     "CIO", "Australia", "Google Ads", 72, "Qualified", 3, 40, "02:15", None),
    (9, "Daniel", "Okafor", "d.okafor@brightwellhealth.co.uk", "Brightwell Health",
     "VP of IT", "UK", "Email", 47, "Nurturing", 4, 130, "10:05", None),
    (10, "Emma", "Fischer", "emma.fischer@alpenblick-versicherung.de",
     "Alpenblick Versicherung AG", "CTO", "Germany", "Email", 81, "Qualified", 4, 70, "13:25",
     None),
    (11, "Noah", "Tremblay", "noah.tremblay@maplegrove-retail.ca", "Maple Grove Retail",
     "IT Manager", "Canada", "Email", 22, "New", 4, 25, "17:50", None),
    (12, "Amelia", "Clarke", "amelia.clarke@fernhollowbank.com.au", "Fernhollow Bank",
     "Chief Data Officer", "Australia", "LinkedIn", 76, "Qualified", 5, 100, "23:40", None),
    (13, "Lucas", "Martin", "lucas.martin@vignoble-finance.fr", "Vignoble Finance",
     "VP of Data", "France", "LinkedIn", 40, "New", 5, 12, "09:55", None),
    (14, "Hannah", "Walsh", "hannah.walsh@tidewaterenergy.com", "Tidewater Energy",
     "Head of Analytics", "USA", "Event", 58, "Nurturing", 6, 105, "12:00", None),
    (15, "Liam", "O'Connor", "liam.oconnor@granitepeaksoftware.ca", "Granite Peak Software",
     "CTO", "Canada", "Webinar", 29, "New", 8, 10, "18:20", None),
)  # fmt: skip

# channel: target cost per click in cents, click-through rate and conversion rate ranges in
# basis points (clicks per 10,000 impressions; conversions per 10,000 clicks).
_CHANNELS: dict[str, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "LinkedIn": (750, (45, 90), (300, 800)),
    "Google Ads": (320, (200, 500), (200, 600)),
    "Email": (110, (800, 1500), (100, 400)),
    "Webinar": (450, (100, 300), (800, 1500)),
    "Events": (1200, (100, 200), (500, 1200)),
}

# page: base daily visitors, bounce rate and time on page ranges in hundredths.
_PAGE_PROFILES: dict[str, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "/": (400, (3000, 5500), (3000, 9000)),
    "/pricing": (120, (2000, 4000), (6000, 15000)),
    "/product": (200, (2500, 4500), (9000, 24000)),
    "/blog": (260, (5500, 8000), (12000, 30000)),
    "/contact": (40, (1500, 3500), (4000, 10000)),
}
_SOURCE_SHARES = {"Organic": 45, "Paid Search": 25, "Social Media": 18, "Email": 12}  # percent

_SPEND_SEED = 1000  # + campaign_id: weights of the daily spend split
_DELIVERY_SEED = 2000  # + campaign_id: daily clicks, impressions, conversions
_TRAFFIC_SEED = 20241018


def sample(as_of: dt.date) -> dict[str, list[dict[str, Any]]]:
    """Rows of every marketing table for the window ending at as_of, in load order."""
    campaigns = _campaigns(as_of)
    return {
        "campaigns": campaigns,
        "leads": _leads(as_of),
        "campaign_metrics": _campaign_metrics(campaigns, as_of),
        "website_traffic": _website_traffic(as_of),
    }


def window(as_of: dt.date) -> tuple[dt.date, dt.date]:
    """First and last day of the data window: (as_of - 6 calendar months, as_of]."""
    return _months_before(as_of, WINDOW_MONTHS) + dt.timedelta(days=1), as_of


def metric_days(campaign: dict[str, Any], as_of: dt.date) -> list[dt.date]:
    """A campaign's active days in the window: one campaign_metrics row each."""
    first, last = window(as_of)
    start = max(campaign["start_date"], first)
    end = min(campaign["end_date"], last)
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def daily_spend_cents(campaign: dict[str, Any], as_of: dt.date) -> list[int]:
    """The campaign's whole spent, in cents, split over its metric days; sums to it exactly."""
    rng = random.Random(_SPEND_SEED + campaign["campaign_id"])
    weights = []
    for day in metric_days(campaign, as_of):
        weight = rng.randint(70, 130)
        weights.append(weight * 6 // 10 if day.weekday() >= 5 else weight)
    return split_cents(int(campaign["spent"] * 100), weights)


def split_cents(total: int, weights: list[int]) -> list[int]:
    """Split total cents in proportion to weights (largest remainder); the parts sum to total."""
    whole = sum(weights)
    if not weights or whole <= 0:
        raise ValueError(f"cannot split {total} cents over weights {weights}")
    parts = [total * w // whole for w in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def round_half_up(value: Decimal) -> Decimal:
    """Round to cents half away from zero, as PostgreSQL's round(numeric, 2) does."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def _months_before(day: dt.date, months: int) -> dt.date:
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    last_day = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last_day))


def _campaigns(as_of: dt.date) -> list[dict[str, Any]]:
    rows = []
    for cid, name, kind, channel, start, end, budget, spent, audience in _CAMPAIGNS:
        end_date = as_of + dt.timedelta(days=end)
        rows.append(
            {
                "campaign_id": cid,
                "campaign_name": name,
                "campaign_type": kind,
                "channel": channel,
                "start_date": as_of + dt.timedelta(days=start),
                "end_date": end_date,
                "budget": Decimal(budget),
                "spent": Decimal(spent),
                "status": "Active" if end_date >= as_of else "Completed",
                "target_audience": audience,
            }
        )
    return rows


def _leads(as_of: dt.date) -> list[dict[str, Any]]:
    rows = []
    for lead in _LEADS:
        lead_id, first, last, email, company, title, country, source, score, status = lead[:10]
        campaign_id, created_back, created_time, converted_back = lead[10:]
        created_at = dt.datetime.combine(
            as_of - dt.timedelta(days=created_back),
            dt.time.fromisoformat(created_time),
            tzinfo=dt.UTC,
        )
        converted_at = None
        if converted_back is not None:
            converted_at = dt.datetime.combine(
                as_of - dt.timedelta(days=converted_back), CONVERSION_TIME, tzinfo=dt.UTC
            )
        rows.append(
            {
                "lead_id": lead_id,
                "first_name": first,
                "last_name": last,
                "email": email,
                "company": company,
                "job_title": title,
                "country": country,
                "lead_source": source,
                "lead_score": score,
                "status": status,
                "campaign_id": campaign_id,
                "created_at": created_at,
                "converted_at": converted_at,
            }
        )
    return rows


def _campaign_metrics(campaigns: list[dict[str, Any]], as_of: dt.date) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for campaign in campaigns:
        cpc_target, ctr_range, conversion_range = _CHANNELS[campaign["channel"]]
        rng = random.Random(_DELIVERY_SEED + campaign["campaign_id"])
        days = metric_days(campaign, as_of)
        for day, spend in zip(days, daily_spend_cents(campaign, as_of), strict=True):
            clicks = max(1, spend * 100 // (cpc_target * rng.randint(80, 120)))
            impressions = max(clicks + 1, clicks * 10_000 // rng.randint(*ctr_range))
            conversions = min(clicks - 1, clicks * rng.randint(*conversion_range) // 10_000)
            rows.append(
                {
                    "metric_id": len(rows) + 1,
                    "campaign_id": campaign["campaign_id"],
                    "metric_date": day,
                    "impressions": impressions,
                    "clicks": clicks,
                    "conversions": conversions,
                    "cost_per_click": round_half_up(Decimal(spend) / (clicks * 100)),
                    "conversion_rate": round_half_up(Decimal(conversions * 100) / clicks),
                }
            )
    return rows


def _website_traffic(as_of: dt.date) -> list[dict[str, Any]]:
    rng = random.Random(_TRAFFIC_SEED)
    first, last = window(as_of)
    n_days = (last - first).days + 1
    rows: list[dict[str, Any]] = []
    for i in range(n_days):
        day = first + dt.timedelta(days=i)
        weekday_pct = 60 if day.weekday() >= 5 else 100
        trend_pct = 90 + 20 * i // n_days  # traffic grows about a fifth over the window
        for page in PAGES:
            base, bounce_range, seconds_range = _PAGE_PROFILES[page]
            for source in SOURCES:
                percents = _SOURCE_SHARES[source] * weekday_pct * trend_pct * rng.randint(75, 125)
                visitors = max(1, base * percents // 100_000_000)
                rows.append(
                    {
                        "traffic_id": len(rows) + 1,
                        "visit_date": day,
                        "page_url": page,
                        "source": source,
                        "visitors": visitors,
                        "page_views": visitors * rng.randint(100, 280) // 100,
                        "bounce_rate": Decimal(rng.randint(*bounce_range)).scaleb(-2),
                        "avg_time_on_page": Decimal(rng.randint(*seconds_range)).scaleb(-2),
                    }
                )
    return rows

"""Marketing data at scale: `generate(conn, scale, as_of)` fills empty tables set-based.

Shape at scale N (N > 1; scale 1 is the literal sample, see sample.py), over the year up to
as_of:

- campaigns: 8 + N // 50, started over the year (ids in start order, the last 20 days before
  as_of), 30 to 90 days long; Active while end_date >= as_of; spent 50-99% of the budget
- campaign_metrics: one row per campaign per active day (start_date to min(end_date, as_of))
- leads: 20N created over the year (the last on as_of); 4% Converted (lead_id mod 25 = 7),
  each with the email of a Sales customer (shared.storage.scale.customer_email) and converted_at that
  customer's created_at, the lead created 10 to 69 days before
- website_traffic: 365 days x 5 pages x 4 sources, visitors growing with N

Every value is arithmetic on the row number and `shared.storage.scale.pick`; no Python loop per row.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from services.marketing.sample import PAGES, SOURCES
from shared.storage.scale import choice, customer_created_at, customer_email, day, literal, pick

DAYS = 365
CHANNELS = ("LinkedIn", "Google Ads", "Email", "Webinar", "Events")
TYPES = ("Lead Gen", "PPC", "Email Nurture", "Webinar", "Event")  # by channel
CPC_CENTS = (750, 320, 110, 450, 1200)  # by channel, as in the sample
LEAD_SOURCES = ("LinkedIn", "Google Ads", "Email", "Webinar", "Event")
FIRST = ("John", "Priya", "Lukas", "Maria", "Sophie", "Oliver", "Ethan", "Chloe", "Daniel",
         "Emma", "Noah", "Amelia", "Lucas", "Hannah", "Liam")  # fmt: skip
LAST = ("Carter", "Raman", "Meyer", "Schneider", "Laurent", "Bennett", "Brooks", "Nguyen",
        "Okafor", "Fischer", "Tremblay", "Clarke", "Martin", "Walsh", "O'Connor")  # fmt: skip
TITLES = ("CTO", "CIO", "VP of Engineering", "Head of Data", "IT Manager", "Director of IT")
COUNTRIES = ("USA", "Canada", "UK", "Germany", "France", "Australia")
OPEN_STATUSES = ("New", "New", "New", "Nurturing", "Nurturing", "Nurturing", "Qualified",
                 "Qualified", "Lost", "Lost")  # fmt: skip
PAGE_VISITORS = (400, 120, 200, 260, 40)  # by page, as in the sample
SOURCE_SHARES = (45, 25, 18, 12)  # percent, by source


def campaign_count(scale: int) -> int:
    """Campaigns at a scale above 1."""
    return 8 + scale // 50


def counts(scale: int) -> dict[str, int]:
    """Rows per table at a scale above 1 (campaign_metrics follows from the campaigns' dates:
    one row per campaign per day from start_date to min(end_date, as_of))."""
    leads = 20 * scale
    return {
        "campaigns": campaign_count(scale),
        "leads": leads,
        "converted_leads": (leads - 7) // 25 + 1,
        "website_traffic": DAYS * len(PAGES) * len(SOURCES),
    }


def statements(scale: int, as_of: dt.date) -> list[str]:
    """INSERT ... SELECT statements filling campaigns, leads, campaign_metrics and
    website_traffic, in that order."""
    n_campaigns = campaign_count(scale)
    n_leads = counts(scale)["leads"]
    start_back = f"(({n_campaigns} - c) * {DAYS - 50} / {n_campaigns} + 20)"
    start = day(as_of, start_back)
    end = f"({start} + (30 + {pick('c', 41, 61)})::integer)"
    budget = f"((20 + {pick('c', 42, 181)}) * 500)::numeric(14,2)"
    campaigns = f"""
        INSERT INTO campaigns (campaign_id, campaign_name, campaign_type, channel, start_date,
                               end_date, budget, spent, status, target_audience)
        SELECT c, 'Campaign ' || c || ': ' || (ARRAY[{", ".join(map(literal, CHANNELS))}])[ch],
               (ARRAY[{", ".join(map(literal, TYPES))}])[ch],
               (ARRAY[{", ".join(map(literal, CHANNELS))}])[ch],
               s, e, b, round(b * (50 + {pick("c", 43, 50)}) / 100, 2),
               CASE WHEN e >= DATE '{as_of.isoformat()}' THEN 'Active' ELSE 'Completed' END,
               'Audience segment ' || (1 + {pick("c", 44, 40)})
        FROM generate_series(1, {n_campaigns}) AS c,
             LATERAL (SELECT 1 + {pick("c", 40, len(CHANNELS))} AS ch, {start} AS s,
                             {end} AS e, {budget} AS b) AS v
    """
    # a converted lead l belongs to customer (l - 7) / 25 + 1
    customer = "((l - 7) / 25 + 1)"
    converted = "(l % 25 = 7)"
    converted_at = customer_created_at(customer, scale, as_of)
    back = f"(({n_leads} - l) * {DAYS} / {n_leads})"
    minutes = f"make_interval(mins => ({pick('l', 50, 24 * 60)})::integer)"
    created = (
        f"CASE WHEN {converted} THEN {converted_at} - make_interval(days => (10 + "
        f"{pick('l', 51, 60)})::integer) - {minutes} "
        f"ELSE ({day(as_of, back)} + TIME '00:00') AT TIME ZONE 'UTC' + {minutes} END"
    )
    leads = f"""
        INSERT INTO leads (lead_id, first_name, last_name, email, company, job_title, country,
                           lead_source, lead_score, status, campaign_id, created_at,
                           converted_at)
        SELECT l, {choice(FIRST, "l", 52)}, {choice(LAST, "l", 53)},
               CASE WHEN {converted} THEN {customer_email(customer)}
                    ELSE 'lead' || l || '@prospect-' || (l % 997) || '.example.org' END,
               CASE WHEN {pick("l", 54, 10)} = 0 THEN NULL ELSE 'Prospect Company ' || l END,
               CASE WHEN {pick("l", 55, 5)} = 0 THEN NULL ELSE {choice(TITLES, "l", 56)} END,
               CASE WHEN {pick("l", 57, 8)} = 0 THEN NULL ELSE {choice(COUNTRIES, "l", 58)} END,
               {choice(LEAD_SOURCES, "l", 59)},
               CASE WHEN {converted} THEN 60 + {pick("l", 60, 41)} ELSE {pick("l", 61, 101)} END,
               CASE WHEN {converted} THEN 'Converted' ELSE {choice(OPEN_STATUSES, "l", 62)} END,
               1 + {pick("l", 63, n_campaigns)},
               {created},
               CASE WHEN {converted} THEN {converted_at} END
        FROM generate_series(1, {n_leads}) AS l
    """
    cpc = ", ".join(map(str, CPC_CENTS))
    channel_index = f"array_position(ARRAY[{', '.join(map(literal, CHANNELS))}], c.channel)"
    metrics = f"""
        INSERT INTO campaign_metrics (metric_id, campaign_id, metric_date, impressions, clicks,
                                      conversions, cost_per_click, conversion_rate)
        SELECT row_number() OVER (ORDER BY c.campaign_id, d), c.campaign_id, d,
               clicks * 10000 / (100 + {pick("c.campaign_id * 1000 + i", 71, 900)}) + 1,
               clicks,
               least(clicks - 1, clicks * (100 + {pick("c.campaign_id * 1000 + i", 72, 1400)})
                                 / 10000),
               round(cents / clicks / 100, 2),
               round(least(clicks - 1, clicks * (100 + {pick("c.campaign_id * 1000 + i", 72, 1400)})
                                       / 10000) * 100.0 / clicks, 2)
        FROM campaigns AS c,
             LATERAL (SELECT (c.spent * 100 / (least(c.end_date, DATE '{as_of.isoformat()}')
                                                - c.start_date + 1)) AS cents) AS daily,
             LATERAL generate_series(0, least(c.end_date, DATE '{as_of.isoformat()}')
                                        - c.start_date) AS i,
             LATERAL (SELECT c.start_date + i AS d,
                             greatest(1, floor(cents * 100 / ((ARRAY[{cpc}])[{channel_index}]
                                 * (80 + {pick("c.campaign_id * 1000 + i", 70, 41)}))))::integer
                                 AS clicks) AS v
    """
    pages = ", ".join(map(literal, PAGES))
    sources = ", ".join(map(literal, SOURCES))
    growth = 1 + scale // 1000
    row = f"(i * {len(PAGES) * len(SOURCES)} + p * {len(SOURCES)} + s)"
    visitors = (
        f"greatest(1, (ARRAY[{', '.join(map(str, PAGE_VISITORS))}])[p + 1] * {growth}"
        f" * (ARRAY[{', '.join(map(str, SOURCE_SHARES))}])[s + 1]"
        f" * CASE WHEN extract(isodow FROM {day(as_of, 'i')}) >= 6 THEN 60 ELSE 100 END"
        f" * (75 + {pick(row, 80, 51)}) / 1000000)"
    )
    traffic = f"""
        INSERT INTO website_traffic (traffic_id, visit_date, page_url, source, visitors,
                                     page_views, bounce_rate, avg_time_on_page)
        SELECT {row} + 1, {day(as_of, "i")}, (ARRAY[{pages}])[p + 1],
               (ARRAY[{sources}])[s + 1], v, v * (100 + {pick(row, 81, 181)}) / 100,
               (1500 + {pick(row, 82, 6500)})::numeric / 100,
               (3000 + {pick(row, 83, 27000)})::numeric / 100
        FROM generate_series(0, {DAYS - 1}) AS i, generate_series(0, {len(PAGES) - 1}) AS p,
             generate_series(0, {len(SOURCES) - 1}) AS s,
             LATERAL (SELECT {visitors} AS v) AS t
    """
    return [campaigns, leads, metrics, traffic]


async def generate(conn: asyncpg.Connection, scale: int, as_of: dt.date) -> None:
    """Fill the empty Marketing tables at the scale (above 1) as of the date."""
    for statement in statements(scale, as_of):
        await conn.execute(statement)

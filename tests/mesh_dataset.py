"""A second deterministic data set for the mesh's metrics, different from the sample.

Rows of every table of both domains, in the shape of the sample generators (every column,
explicit ids, timezone-aware UTC timestamps, Decimal money; each order's total_amount is the
sum of its line totals, each rounded half-up to cents). It is as of 2025-03-31 and is built to
corner the metric definitions:

- Ana Silva is a lead twice, as `Ana.Silva@Quartzline.io` (campaign 1) and
  `ana.silva@quartzline.io` (campaign 2), both Converted, both on LinkedIn; the customer is
  `ana.silva@QuartzLine.io`. Her orders: one the day before the first lead (not attributed),
  one on that lead's creation day, one between the two leads (campaign 1 only), one on the
  second lead's creation day (created 23:50 UTC), one Cancelled and one after both. LinkedIn
  counts each of her orders once.
- Ben Okoro is a lead twice on different channels (Google Ads, Email) in different case; his
  first lead was created at 00:10 UTC the day after one of his orders (not attributed).
- Campaign 8 (Partners) spent nothing of a 30,000.00 budget, yet its Converted lead's customer
  ordered: roi_pct is NULL there, and so is the Partners channel's revenue_per_dollar.
- Campaigns 4 and 11 each spent 800.00 and won exactly one 801.00 / 799.00 order: roi_pct
  +0.125 and -0.125 percent, which round half away from zero to 0.13 and -0.13.
- A Converted lead whose customer has no orders (lead 6, company unknown); a Converted lead
  whose email is no customer's (lead 7); a Lost and a Qualified lead whose emails are
  customers' (never matched); an existing customer converted by a later lead (negative
  days_to_conversion); Cancelled orders of converted customers; an order with two lines of the
  same product; campaigns without any lead (9, 12) and a channel without leads (Social Media).
- Timestamps on day boundaries: a customer created at 00:00:00 and one at 23:59:59 UTC, a lead
  converted at 23:59:59 UTC, another created at 23:30 UTC with an order that same day.
- Total marketing spend is 277,830.61; the customers created from 2024-12-12 to 2024-12-20 are
  exactly two, so that customer acquisition cost is 138,915.305, rounded half up to 138,915.31.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

AS_OF = dt.date(2025, 3, 31)
CENT = Decimal("0.01")
Rows = dict[str, list[dict[str, Any]]]

REGION_BY_COUNTRY = {
    "USA": "North America",
    "Canada": "North America",
    "UK": "Europe",
    "Germany": "Europe",
    "France": "Europe",
    "Netherlands": "Europe",
    "Australia": "Asia Pacific",
    "Japan": "Asia Pacific",
}


def ts(text: str) -> dt.datetime:
    """A UTC timestamp from 'YYYY-MM-DD HH:MM[:SS]'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def line_total(quantity: int, unit_price: Decimal, discount_percent: Decimal) -> Decimal:
    """quantity x unit_price x (1 - discount_percent/100), rounded half-up to cents."""
    exact = quantity * unit_price * (1 - discount_percent / 100)
    return exact.quantize(CENT, rounding=ROUND_HALF_UP)


# fmt: off

# customer_id, customer_name, email, phone, country, industry, company_size, created_at
_CUSTOMERS: tuple[tuple[int, str, str, str | None, str, str | None, str, str], ...] = (
    (1, "Quartzline Analytics", "ana.silva@QuartzLine.io", "+1-646-555-0101",
        "USA", "Technology", "Mid-Market", "2024-10-20 10:00"),
    (2, "Harbourpoint Shipping", "ben.okoro@harbourpoint.com", "+44-20-7946-0102",
        "UK", "Logistics", "Enterprise", "2024-10-30 09:00"),
    (3, "Vitreo SAS", "g.moreau@vitreo.fr", "+33-1-5550-0103",
        "France", "Manufacturing", "Small", "2024-12-20 10:00"),
    (4, "Kestrel Learning Trust", "admin@kestrel-learning.com.au", None,
        "Australia", None, "Small", "2025-03-03 10:00"),
    (5, "Baltic Ore Holdings", "m.kowalski@baltic-ore.de", "+49-40-5550-0105",
        "Germany", "Mining", "Enterprise", "2024-06-15 10:00"),
    (6, "Fjordline Retail", "e.berg@fjordline-retail.co.uk", "+44-161-496-0106",
        "UK", "Retail", "Small", "2025-01-25 09:30"),
    (7, "Copperleaf Clinics", "s.ahmed@copperleafclinics.ca", "+1-416-555-0107",
        "Canada", "Healthcare", "Mid-Market", "2025-02-03 16:00"),
    (8, "Northgate Insurance", "t.lindqvist@northgate-ins.com", "+1-312-555-0108",
        "USA", "Finance", "Enterprise", "2024-10-25 11:00"),
    (9, "Solenne Cosmetiques", "l.dupont@solenne.fr", "+33-4-5550-0109",
        "France", "Retail", "Mid-Market", "2024-12-12 00:00:00"),
    (10, "Redgum Energy", "j.oconnell@redgum-energy.com.au", "+61-8-5550-0110",
        "Australia", "Energy", "Mid-Market", "2024-11-06 23:59:59"),
    (11, "Prairie Grain Co-op", "h.nakamura@prairiegrain.ca", "+1-306-555-0111",
        "Canada", "Agriculture", "Small", "2025-01-31 12:00"),
    (12, "Summit Ridge Bank", "r.hayes@summitridge-bank.com", "+1-212-555-0112",
        "USA", "Finance", "Enterprise", "2024-03-10 10:00"),
    (13, "Tulip Logistics BV", "q.li@tulip-logistics.nl", "+31-20-555-0113",
        "Netherlands", "Logistics", "Mid-Market", "2024-09-30 23:59:59"),
    (14, "Osaka Precision KK", "y.tanaka@osaka-precision.jp", "+81-6-5550-0114",
        "Japan", "Manufacturing", "Enterprise", "2024-10-01 00:00:00"),
    (15, "Bluewater Utilities", "procurement@bluewater-util.com", "+1-206-555-0115",
        "USA", "Energy", "Enterprise", "2024-02-01 10:00"),
    (16, "Heide Versand GmbH", "k.vogel@heide-versand.de", None,
        "Germany", "Retail", "Small", "2024-05-20 10:00"),
    (17, "Lighthouse Media", "contact@lighthouse-media.co.uk", "+44-117-496-0117",
        "UK", "Media", "Small", "2024-07-04 10:00"),
    (18, "Aurora Biotech", "it@aurora-biotech.ca", "+1-514-555-0118",
        "Canada", "Healthcare", "Mid-Market", "2024-08-19 10:00"),
    (19, "Cobalt Peak Capital", "ops@cobaltpeak.com", "+1-617-555-0119",
        "USA", "Finance", "Mid-Market", "2024-11-11 10:00"),
    (20, "Marais Conseil", "bonjour@marais-conseil.fr", "+33-1-5550-0120",
        "France", None, "Small", "2024-11-28 10:00"),
    (21, "Kookaburra Freight", "dispatch@kookaburra-freight.com.au", "+61-2-5550-0121",
        "Australia", "Logistics", "Mid-Market", "2024-12-30 10:00"),
    (22, "Edelweiss Pharma AG", "einkauf@edelweiss-pharma.de", "+49-89-5550-0122",
        "Germany", "Healthcare", "Enterprise", "2025-01-14 10:00"),
    (23, "Granite State Tools", "buyers@granitestatetools.com", "+1-603-555-0123",
        "USA", "Manufacturing", "Small", "2025-02-17 10:00"),
    (24, "Thistle Games Ltd", "studio@thistlegames.co.uk", None,
        "UK", "Technology", "Small", "2025-03-10 10:00"),
    (25, "Rotterdam Port Data", "data@rotterdam-portdata.nl", "+31-10-555-0125",
        "Netherlands", "Logistics", "Enterprise", "2025-03-28 10:00"),
    (26, "Sakura Retail Group", "it@sakura-retail.jp", "+81-3-5550-0126",
        "Japan", "Retail", "Enterprise", "2024-04-22 10:00"),
    (27, "Prairie Wind Farms", "office@prairiewind.ca", "+1-403-555-0127",
        "Canada", "Energy", "Small", "2024-10-15 10:00"),
    (28, "Golden Gate Robotics", "hello@ggrobotics.com", "+1-415-555-0128",
        "USA", "Technology", "Mid-Market", "2024-12-02 10:00"),
    (29, "Loire Valley Wines", "cave@loirevalley-wines.fr", "+33-2-5550-0129",
        "France", "Retail", "Small", "2025-01-05 10:00"),
    (30, "Outback Telecom", "noc@outback-telecom.com.au", "+61-7-5550-0130",
        "Australia", "Telecommunications", "Enterprise", "2025-02-26 10:00"),
    (31, "Hanse Analytics", "team@hanse-analytics.de", "+49-40-5550-0131",
        "Germany", "Technology", "Small", "2024-09-01 10:00"),
    (32, "Maple Civic Services", "it@maplecivic.ca", "+1-613-555-0132",
        "Canada", "Government", "Mid-Market", "2025-03-31 23:59:59"),
)

# product_id, product_name, category, price, cost, description
_PRODUCTS: tuple[tuple[int, str, str, str, str, str | None], ...] = (
    (1, "Lakehouse Platform", "Software", "42000.00", "12600.00",
        "Open-table-format lakehouse with SQL, streaming ingest and fine-grained access."),
    (2, "Stream Processing Add-on", "Software", "15500.00", "4650.00",
        "Stateful stream processing for the lakehouse."),
    (3, "Governance Catalog", "Software", "9999.99", "3000.00",
        "Catalog, lineage and policies."),
    (4, "BI Seats (10-pack)", "Software", "2450.50", "735.15", None),
    (5, "Edge Gateway Appliance", "Infrastructure", "12750.00", "8925.00",
        "Rack-mounted ingest gateway for plant and fleet data."),
    (6, "GPU Inference Node", "Infrastructure", "61000.00", "42700.00",
        "Eight-GPU inference server."),
    (7, "Starter Support Pack", "Software", "799.00", "240.00", None),
    (8, "Training Day", "Software", "801.00", "300.00", "One day of on-site training."),
    (9, "Backup Vault 100 TB", "Infrastructure", "18333.33", "12833.33",
        "Immutable backup appliance."),
)

# order_id, order_date, customer_id, order_status, payment_method, sales_rep,
#     items as (product_id, quantity, discount_percent); unit_price is the product's price
_ORDERS: tuple[tuple[int, str, int, str, str, str, tuple[tuple[int, int, str], ...]], ...] = (
    # Ana Silva (customer 1; leads 1 and 2 created 2024-10-05 and 2024-11-20 23:50 UTC)
    (1, "2024-10-04", 1, "Completed", "Credit Card", "Maya Brooks", ((4, 2, "0.00"),)),
    (2, "2024-10-05", 1, "Completed", "Purchase Order", "Maya Brooks",
        ((1, 1, "10.00"), (4, 1, "0.00"), (4, 3, "5.00"))),
    (3, "2024-11-01", 1, "Completed", "Credit Card", "Maya Brooks", ((3, 1, "0.00"),)),
    (4, "2024-11-20", 1, "Processing", "Purchase Order", "Maya Brooks", ((2, 1, "2.50"),)),
    (5, "2025-01-15", 1, "Cancelled", "Wire Transfer", "Maya Brooks", ((6, 1, "0.00"),)),
    (6, "2025-02-10", 1, "Pending", "Wire Transfer", "Maya Brooks",
        ((5, 2, "7.50"), (4, 4, "0.00"))),
    # Ben Okoro (customer 2; leads 3 and 4 created 2024-11-02 00:10 UTC and 2025-01-08)
    (7, "2024-11-01", 2, "Completed", "Purchase Order", "Tom Ashworth", ((3, 2, "0.00"),)),
    (8, "2024-12-05", 2, "Completed", "Wire Transfer", "Tom Ashworth",
        ((1, 1, "5.00"), (2, 1, "5.00"))),
    (9, "2025-01-08", 2, "Pending", "Purchase Order", "Tom Ashworth", ((4, 10, "12.50"),)),
    (10, "2025-03-01", 2, "Cancelled", "Wire Transfer", "Tom Ashworth", ((1, 2, "0.00"),)),
    # Vitreo (customer 3; lead 5 of the zero-spend campaign 8, created 2024-12-03)
    (11, "2024-12-20", 3, "Completed", "Wire Transfer", "Camille Roux",
        ((1, 1, "0.00"), (7, 1, "0.00"))),
    (12, "2025-02-14", 3, "Completed", "Credit Card", "Camille Roux", ((2, 2, "10.00"),)),
    # Baltic Ore (customer 5 since 2024-06-15; lead 8 created 2024-10-21, converted 10-28)
    (13, "2024-08-01", 5, "Completed", "Wire Transfer", "Jonas Keller", ((6, 1, "5.00"),)),
    (14, "2024-10-21", 5, "Completed", "Purchase Order", "Jonas Keller", ((5, 1, "0.00"),)),
    (15, "2024-11-15", 5, "Completed", "Wire Transfer", "Jonas Keller",
        ((1, 1, "15.00"), (3, 2, "15.00"))),
    (16, "2024-12-24", 5, "Cancelled", "Purchase Order", "Jonas Keller", ((5, 1, "0.00"),)),
    # Fjordline (customer 6; lead 9 of campaign 11, which spent 800.00)
    (17, "2025-02-01", 6, "Completed", "Credit Card", "Tom Ashworth", ((7, 1, "0.00"),)),
    # Copperleaf (customer 7; lead 10 of campaign 4, which spent 800.00)
    (18, "2025-02-05", 7, "Completed", "Credit Card", "Maya Brooks", ((8, 1, "0.00"),)),
    # Northgate (customer 8; lead 11 of campaign 1, created 2024-10-10)
    (19, "2024-10-30", 8, "Completed", "Wire Transfer", "Maya Brooks", ((1, 2, "12.50"),)),
    (20, "2025-01-20", 8, "Processing", "Purchase Order", "Maya Brooks",
        ((4, 5, "0.00"), (3, 1, "2.50"))),
    # Solenne (customer 9; lead 12 created 2024-11-15, converted 2024-12-12 00:00 UTC)
    (21, "2024-12-12", 9, "Completed", "Credit Card", "Camille Roux", ((2, 1, "0.00"),)),
    (22, "2024-12-11", 9, "Completed", "Credit Card", "Camille Roux", ((4, 1, "0.00"),)),
    # Redgum (customer 10; lead 13 created 2024-10-21, converted 2024-11-06 23:59:59 UTC)
    (23, "2024-11-06", 10, "Completed", "Wire Transfer", "Ella Hart", ((5, 3, "10.00"),)),
    (24, "2025-03-20", 10, "Pending", "Wire Transfer", "Ella Hart", ((6, 1, "20.00"),)),
    # Prairie Grain (customer 11; lead 14 created 2025-01-02 23:30 UTC)
    (25, "2025-01-02", 11, "Completed", "Credit Card", "Tom Ashworth", ((4, 2, "0.00"),)),
    (26, "2025-03-05", 11, "Completed", "Credit Card", "Tom Ashworth", ((3, 1, "0.00"),)),
    # customers whose leads are not Converted, and customers who never were leads
    (27, "2024-11-11", 12, "Completed", "Wire Transfer", "Maya Brooks", ((1, 1, "0.00"),)),
    (28, "2025-01-07", 13, "Completed", "Purchase Order", "Jonas Keller", ((2, 1, "0.00"),)),
    (29, "2024-10-02", 14, "Completed", "Wire Transfer", "Ella Hart", ((6, 2, "5.00"),)),
    (30, "2024-10-18", 15, "Completed", "Purchase Order", "Maya Brooks", ((9, 1, "0.00"),)),
    (31, "2024-11-29", 19, "Completed", "Wire Transfer", "Maya Brooks",
        ((1, 1, "7.50"), (9, 1, "7.50"))),
    (32, "2024-12-15", 20, "Cancelled", "Credit Card", "Camille Roux", ((7, 1, "0.00"),)),
    (33, "2025-01-03", 21, "Completed", "Purchase Order", "Ella Hart", ((5, 2, "0.00"),)),
    (34, "2025-02-20", 22, "Processing", "Wire Transfer", "Jonas Keller",
        ((6, 1, "0.00"), (3, 3, "10.00"))),
    (35, "2025-03-12", 26, "Completed", "Wire Transfer", "Ella Hart", ((2, 2, "0.00"),)),
    (36, "2025-03-25", 28, "Pending", "Credit Card", "Maya Brooks", ((4, 3, "0.00"),)),
    (37, "2024-12-28", 31, "Completed", "Credit Card", "Jonas Keller", ((8, 2, "0.00"),)),
)

# campaign_id, campaign_name, campaign_type, channel, start_date, end_date, budget, spent,
#     status, target_audience
_CAMPAIGNS: tuple[tuple[int, str, str, str, str, str, str, str, str, str | None], ...] = (
    (1, "Winter Lakehouse Launch", "Product Launch", "LinkedIn", "2024-10-01", "2024-12-15",
        "80000.00", "75250.40", "Completed", "Heads of data at mid-market software buyers"),
    (2, "Fintech ABM Q4", "Lead Gen", "LinkedIn", "2024-11-01", "2025-02-28",
        "60000.00", "48999.99", "Completed", "IT leadership at fintechs"),
    (3, "Search: Lakehouse Keywords", "PPC", "Google Ads", "2024-10-15", "2025-06-30",
        "90000.00", "41234.55", "Active", "In-market lakehouse buyers"),
    (4, "Q1 Retargeting", "Retargeting", "Google Ads", "2025-01-05", "2025-04-30",
        "20000.00", "800.00", "Active", "Visitors of the pricing page"),
    (5, "Quarterly Newsletter", "Email Nurture", "Email", "2024-10-01", "2025-03-31",
        "15000.00", "12345.67", "Active", "Newsletter subscribers"),
    (6, "Lakehouse Deep-Dive Webinar", "Webinar", "Webinar", "2024-11-10", "2024-12-10",
        "25000.00", "19800.00", "Completed", "Architects and data engineers"),
    (7, "Data Summit Berlin", "Event", "Events", "2024-10-20", "2024-10-22",
        "70000.00", "66600.01", "Completed", "European data leaders, in person"),
    (8, "Partner Referral Pilot", "Referral", "Partners", "2024-12-01", "2025-05-31",
        "30000.00", "0.00", "Active", None),
    (9, "Spring Preview", "Product Launch", "LinkedIn", "2025-04-15", "2025-05-15",
        "40000.00", "0.00", "Draft", "Existing customers"),
    (10, "Podcast Sponsorship", "Brand", "Podcast", "2024-12-01", "2025-02-28",
        "12000.00", "11999.99", "Paused", "Data engineering podcast listeners"),
    (11, "Email Win-back", "Email Nurture", "Email", "2025-01-10", "2025-03-20",
        "8000.00", "800.00", "Completed", "Lapsed trial users"),
    (12, "Organic Community Push", "Community", "Social Media", "2025-02-01", "2025-03-31",
        "0.00", "0.00", "Active", None),
)

# lead_id, first_name, last_name, email, company, job_title, country, lead_source,
#     lead_score, status, campaign_id, created_at, converted_at
_LEADS: tuple[tuple[int, str, str, str, str | None, str | None, str | None, str, int, str, int,
                    str, str | None], ...] = (
    (1, "Ana", "Silva", "Ana.Silva@Quartzline.io", "Quartzline Analytics", "Head of Data",
        "USA", "LinkedIn", 91, "Converted", 1, "2024-10-05 09:00", "2024-10-20 10:00"),
    (2, "Ana", "Silva", "ana.silva@quartzline.io", "Quartzline Analytics", "Head of Data",
        "USA", "LinkedIn", 88, "Converted", 2, "2024-11-20 23:50", "2024-12-02 10:00"),
    (3, "Ben", "Okoro", "Ben.Okoro@Harbourpoint.com", "Harbourpoint Shipping", "CIO",
        "UK", "Google Ads", 80, "Converted", 3, "2024-11-02 00:10", "2024-11-30 15:00"),
    (4, "Ben", "Okoro", "BEN.OKORO@HARBOURPOINT.COM", "Harbourpoint Shipping", "CIO",
        "UK", "Email", 77, "Converted", 5, "2025-01-08 12:00", "2025-01-20 10:00"),
    (5, "Gaelle", "Moreau", "g.moreau@vitreo.fr", "Vitreo SAS", "COO",
        "France", "Referral", 70, "Converted", 8, "2024-12-03 08:00", "2024-12-20 10:00"),
    (6, "Kiri", "Walker", "admin@kestrel-learning.com.au", None, None,
        None, "Webinar", 66, "Converted", 6, "2024-11-12 13:00", "2025-03-03 10:00"),
    (7, "Orla", "Finch", "orla.finch@nowhere-labs.com", "Nowhere Labs", "CTO",
        "UK", "Google Ads", 59, "Converted", 3, "2024-12-10 10:00", "2025-01-05 10:00"),
    (8, "Marek", "Kowalski", "M.Kowalski@Baltic-Ore.de", "Baltic Ore Holdings", "Head of IT",
        "Germany", "Event", 83, "Converted", 7, "2024-10-21 14:00", "2024-10-28 10:00"),
    (9, "Erik", "Berg", "e.berg@fjordline-retail.co.uk", "Fjordline Retail", "IT Manager",
        "UK", "Email", 64, "Converted", 11, "2025-01-12 10:00", "2025-01-25 09:30"),
    (10, "Sara", "Ahmed", "s.ahmed@copperleafclinics.ca", "Copperleaf Clinics", "CIO",
        "Canada", "Google Ads", 72, "Converted", 4, "2025-01-20 11:00", "2025-02-03 16:00"),
    (11, "Tove", "Lindqvist", "t.lindqvist@northgate-ins.com", "Northgate Insurance", "CDO",
        "USA", "LinkedIn", 86, "Converted", 1, "2024-10-10 08:00", "2024-10-25 11:00"),
    (12, "Louise", "Dupont", "L.Dupont@Solenne.fr", "Solenne Cosmetiques", "DSI",
        "France", "Webinar", 69, "Converted", 6, "2024-11-15 17:00", "2024-12-12 00:00"),
    (13, "Jack", "O'Connell", "j.oconnell@redgum-energy.com.au", "Redgum Energy", "CTO",
        "Australia", "Event", 75, "Converted", 7, "2024-10-21 09:00", "2024-11-06 23:59:59"),
    (14, "Hana", "Nakamura", "h.nakamura@prairiegrain.ca", "Prairie Grain Co-op", "IT Lead",
        "Canada", "Website", 61, "Converted", 3, "2025-01-02 23:30", "2025-01-31 12:00"),
    (15, "Robert", "Hayes", "r.hayes@summitridge-bank.com", "Summit Ridge Bank", "CISO",
        "USA", "Podcast", 45, "Lost", 10, "2024-12-05 10:00", None),
    (16, "Qing", "Li", "Q.Li@Tulip-Logistics.nl", "Tulip Logistics BV", "Data Lead",
        "Netherlands", "Website", 58, "Qualified", 3, "2024-12-18 10:00", None),
    (17, "Alice", "Moreno", "alice.moreno@brightfield.io", "Brightfield", "Data Engineer",
        "USA", "LinkedIn", 40, "New", 1, "2024-10-11 10:00", None),
    (18, "Bruno", "Costa", "bruno.costa@ondaverde.com", "Onda Verde", "CTO",
        "USA", "LinkedIn", 55, "Nurturing", 1, "2024-10-18 15:00", None),
    (19, "Chen", "Wei", "chen.wei@jadeharbor.com", "Jade Harbor Trading", "IT Director",
        "Canada", "LinkedIn", 62, "Qualified", 2, "2024-11-05 10:00", None),
    (20, "Dana", "Kim", "dana.kim@ridgeway-fin.com", "Ridgeway Financial", "VP Data",
        "USA", "LinkedIn", 71, "Lost", 2, "2024-12-01 10:00", None),
    (21, "Eli", "Novak", "eli.novak@vltava-soft.cz", None, "Developer",
        None, "Website", 18, "New", 2, "2025-01-09 10:00", None),
    (22, "Farah", "Haddad", "farah.haddad@cedarpoint.ae", "Cedar Point", "CIO",
        "UK", "Google Ads", 49, "Nurturing", 3, "2024-10-20 10:00", None),
    (23, "Gus", "Lindahl", "gus.lindahl@northlight.se", "Northlight", "Analyst",
        "UK", "Google Ads", 33, "New", 3, "2024-11-25 10:00", None),
    (24, "Hiro", "Sato", "hiro.sato@kitsune-labs.jp", "Kitsune Labs", "CTO",
        "Japan", "Google Ads", 77, "Qualified", 3, "2025-02-02 10:00", None),
    (25, "Ines", "Duarte", "ines.duarte@maresia.pt", "Maresia", "Head of BI",
        "UK", "Website", 52, "Lost", 4, "2025-01-15 10:00", None),
    (26, "Jonas", "Berg", "jonas.berg@fjellstrom.no", "Fjellstrom", "IT Manager",
        "Germany", "Google Ads", 28, "New", 4, "2025-03-01 10:00", None),
    (27, "Kate", "Murphy", "kate.murphy@shamrock-data.ie", "Shamrock Data", "CDO",
        "UK", "Email", 67, "Nurturing", 5, "2024-10-03 10:00", None),
    (28, "Leo", "Rossi", "leo.rossi@tevere-group.it", "Tevere Group", "CIO",
        "France", "Email", 44, "New", 5, "2024-12-22 10:00", None),
    (29, "Mia", "Schulz", "mia.schulz@elbe-tech.de", "Elbe Tech", "Data Architect",
        "Germany", "Email", 59, "Qualified", 11, "2025-01-18 10:00", None),
    (30, "Nils", "Olsen", "nils.olsen@skagerrak.dk", "Skagerrak", "CTO",
        "Germany", "Email", 35, "Lost", 11, "2025-02-12 10:00", None),
    (31, "Omar", "Farouk", "omar.farouk@nilewave.eg", "Nile Wave", "IT Lead",
        "UK", "Webinar", 63, "Nurturing", 6, "2024-11-11 10:00", None),
    (32, "Paula", "Gomez", "paula.gomez@pampas-agro.ar", "Pampas Agro", "CIO",
        "USA", "Webinar", 48, "New", 6, "2024-11-20 10:00", None),
    (33, "Quinn", "Taylor", "quinn.taylor@bluefin.com.au", "Bluefin", "Head of Data",
        "Australia", "Webinar", 81, "Qualified", 6, "2024-12-01 10:00", None),
    (34, "Rosa", "Vidal", "rosa.vidal@sierra-nevada.es", "Sierra Nevada SL", "CTO",
        "France", "Event", 57, "Lost", 7, "2024-10-20 12:00", None),
    (35, "Sven", "Eriksen", "sven.eriksen@nordkap.no", "Nordkap", "VP Engineering",
        "Germany", "Event", 74, "Qualified", 7, "2024-10-21 16:00", None),
    (36, "Tara", "Singh", "tara.singh@indigo-ops.in", "Indigo Ops", "COO",
        "UK", "Event", 39, "Nurturing", 7, "2024-10-22 09:00", None),
    (37, "Umar", "Bello", "umar.bello@savanna-net.ng", "Savanna Net", "CTO",
        "UK", "Referral", 68, "Qualified", 8, "2025-01-11 10:00", None),
    (38, "Vera", "Ivanova", "vera.ivanova@volga-systems.com", "Volga Systems", "Architect",
        "Germany", "Referral", 26, "New", 8, "2025-03-02 10:00", None),
    (39, "Will", "Turner", "will.turner@seaworthy.co.uk", "Seaworthy", "IT Manager",
        "UK", "Podcast", 31, "New", 10, "2024-12-14 10:00", None),
    (40, "Xena", "Pappas", "xena.pappas@aegean-ai.gr", "Aegean AI", "Founder",
        "France", "Podcast", 52, "Nurturing", 10, "2025-01-06 10:00", None),
    (41, "Yusuf", "Demir", "yusuf.demir@bosphorus-cloud.com", "Bosphorus Cloud", "CTO",
        "Germany", "Podcast", 0, "Lost", 10, "2025-02-08 10:00", None),
    (42, "Zoe", "Adams", "zoe.adams@kelpforest.io", "Kelp Forest", "Data Scientist",
        "USA", "Website", 100, "Qualified", 5, "2025-03-15 10:00", None),
    (43, "Aron", "Weiss", "aron.weiss@alpenglow.at", "Alpenglow", "Head of IT",
        "Germany", "LinkedIn", 47, "Nurturing", 2, "2025-02-20 10:00", None),
    (44, "Bea", "Lund", "bea.lund@fyrtarn.se", "Fyrtarn", "CIO",
        "Germany", "Email", 73, "Qualified", 5, "2025-03-29 10:00", None),
)

# metric_id, campaign_id, metric_date, impressions, clicks, conversions, cost_per_click,
#     conversion_rate
_CAMPAIGN_METRICS: tuple[tuple[int, int, str, int, int, int, str | None, str | None], ...] = (
    (1, 1, "2024-10-01", 12000, 84, 5, "8.93", "5.95"),
    (2, 1, "2024-10-02", 11000, 77, 4, "9.10", "5.19"),
    (3, 3, "2024-10-15", 5400, 162, 6, "3.20", "3.70"),
    (4, 5, "2024-10-01", 20000, 1800, 27, "0.12", "1.50"),
    (5, 8, "2024-12-01", 300, 0, 0, None, None),
    (6, 12, "2025-02-01", 950, 19, 1, "0.00", "5.26"),
)

# traffic_id, visit_date, page_url, source, visitors, page_views, bounce_rate, avg_time_on_page
_WEBSITE_TRAFFIC: tuple[tuple[int, str, str, str, int, int, str, str], ...] = (
    (1, "2025-03-30", "/", "Organic", 410, 820, "41.20", "63.50"),
    (2, "2025-03-30", "/pricing", "Paid Search", 96, 150, "28.75", "104.00"),
    (3, "2025-03-31", "/", "Social Media", 77, 90, "66.00", "31.25"),
    (4, "2025-03-31", "/contact", "Email", 12, 12, "0.00", "0.00"),
)

# fmt: on


def sales_rows() -> Rows:
    """Rows of every Sales table, in load order."""
    customers = [
        {
            "customer_id": cid,
            "customer_name": name,
            "email": email,
            "phone": phone,
            "country": country,
            "industry": industry,
            "company_size": size,
            "created_at": ts(created),
            "updated_at": ts(created),
        }
        for cid, name, email, phone, country, industry, size, created in _CUSTOMERS
    ]
    country_of: dict[int, str] = {c[0]: c[4] for c in _CUSTOMERS}
    products = [
        {
            "product_id": pid,
            "product_name": name,
            "category": category,
            "price": Decimal(price),
            "cost": Decimal(cost),
            "description": description,
        }
        for pid, name, category, price, cost, description in _PRODUCTS
    ]
    price_of: dict[int, Decimal] = {p[0]: Decimal(p[3]) for p in _PRODUCTS}
    orders: list[dict[str, Any]] = []
    order_items: list[dict[str, Any]] = []
    for oid, date, cid, status, payment, rep, items in _ORDERS:
        total = Decimal("0.00")
        for pid, quantity, discount in items:
            amount = line_total(quantity, price_of[pid], Decimal(discount))
            total += amount
            order_items.append(
                {
                    "item_id": len(order_items) + 1,
                    "order_id": oid,
                    "product_id": pid,
                    "quantity": quantity,
                    "unit_price": price_of[pid],
                    "discount_percent": Decimal(discount),
                    "line_total": amount,
                }
            )
        orders.append(
            {
                "order_id": oid,
                "customer_id": cid,
                "order_date": day(date),
                "order_status": status,
                "total_amount": total,
                "payment_method": payment,
                "sales_rep": rep,
                "region": REGION_BY_COUNTRY[country_of[cid]],
            }
        )
    return {
        "customers": customers,
        "products": products,
        "orders": orders,
        "order_items": order_items,
    }


def marketing_rows() -> Rows:
    """Rows of every Marketing table, in load order."""
    campaigns = [
        {
            "campaign_id": cid,
            "campaign_name": name,
            "campaign_type": kind,
            "channel": channel,
            "start_date": day(start),
            "end_date": day(end),
            "budget": Decimal(budget),
            "spent": Decimal(spent),
            "status": status,
            "target_audience": audience,
        }
        for cid, name, kind, channel, start, end, budget, spent, status, audience in _CAMPAIGNS
    ]
    leads = [
        {
            "lead_id": lead[0],
            "first_name": lead[1],
            "last_name": lead[2],
            "email": lead[3],
            "company": lead[4],
            "job_title": lead[5],
            "country": lead[6],
            "lead_source": lead[7],
            "lead_score": lead[8],
            "status": lead[9],
            "campaign_id": lead[10],
            "created_at": ts(lead[11]),
            "converted_at": None if lead[12] is None else ts(lead[12]),
        }
        for lead in _LEADS
    ]
    campaign_metrics = [
        {
            "metric_id": mid,
            "campaign_id": cid,
            "metric_date": day(date),
            "impressions": impressions,
            "clicks": clicks,
            "conversions": conversions,
            "cost_per_click": None if cpc is None else Decimal(cpc),
            "conversion_rate": None if rate is None else Decimal(rate),
        }
        for mid, cid, date, impressions, clicks, conversions, cpc, rate in _CAMPAIGN_METRICS
    ]
    website_traffic = [
        {
            "traffic_id": tid,
            "visit_date": day(date),
            "page_url": page,
            "source": source,
            "visitors": visitors,
            "page_views": views,
            "bounce_rate": Decimal(bounce),
            "avg_time_on_page": Decimal(seconds),
        }
        for tid, date, page, source, visitors, views, bounce, seconds in _WEBSITE_TRAFFIC
    ]
    return {
        "campaigns": campaigns,
        "leads": leads,
        "campaign_metrics": campaign_metrics,
        "website_traffic": website_traffic,
    }


def rows(domain: str) -> Rows:
    """The data set's rows of a domain ('sales' or 'marketing')."""
    return {"sales": sales_rows, "marketing": marketing_rows}[domain]()

"""The Marketing domain's data products: four tables and two analytics views of marketing_db.

Columns are declared in SQL order. A table column is sortable only where an index leads with
it (migrations/marketing/versions/0001_marketing_schema.py); views are small aggregates and
sortable on every column.
"""

from __future__ import annotations

import datetime as dt

from services.marketing.writes import WRITES
from shared.declarations.checks import (
    EMAIL_PATTERN,
    AcceptedValues,
    Consistency,
    Freshness,
    NotNull,
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

# Freshness SLAs: how old the newest row may be. Metrics and traffic are loaded daily, so
# yesterday's day must be there (a day's date counts from its midnight UTC: at most 2 days);
# leads arrive every few days (the sample's newest is 6 days before as-of), so two weeks.
DAILY_FRESHNESS = dt.timedelta(days=2)
LEADS_FRESHNESS = dt.timedelta(days=14)

# Where a lead may come from: the seed's "Website, LinkedIn, Email, etc." and the channels the
# campaigns run on. One list: the quality check and the write API's validation both read it.
LEAD_SOURCES = ("Website", "LinkedIn", "Google Ads", "Email", "Webinar", "Event")

CAMPAIGN_PERFORMANCE_DEFINITION = (
    "campaign_performance: one row per campaign, every campaign (campaigns LEFT JOIN leads). "
    "remaining_budget = budget - spent. budget_utilization_pct = spent / budget * 100, "
    "rounded to 2 decimals, NULL when the budget is 0. total_leads = the campaign's leads; "
    "converted_leads = those with status Converted; conversion_rate = converted_leads / "
    "total_leads * 100, rounded to 2 decimals, NULL when the campaign has no leads."
)

LEAD_FUNNEL_DEFINITION = (
    "lead_funnel: one row per lead status present in leads. lead_count = leads in that "
    "status; avg_lead_score = their mean lead_score, rounded to 2 decimals; "
    "campaigns_contributing = distinct campaigns those leads came from."
)

CAMPAIGN_METRICS_DEFINITION = (
    "One row per campaign per active day: every day from the later of the campaign's "
    "start_date and the first day of the data window to the earlier of its end_date and the "
    "as-of date. The campaign's spent is split over those days in whole cents, so the day "
    "spends add up to spent exactly (all of spent, including any spend before the window, is "
    "allocated to the in-window days). cost_per_click = day spend / clicks and "
    "conversion_rate = conversions / clicks * 100, each rounded half up to 2 decimals and NULL "
    "on a day without clicks. Hence the sum over a campaign's days of cost_per_click * clicks "
    "is within 0.005 * (its total clicks) of spent."
)

CAMPAIGNS = Product(
    name="campaigns",
    source="campaigns",
    description="Marketing campaigns with their channel, run dates, budget and spend to date.",
    key=("campaign_id",),
    columns=(
        Column(
            "campaign_id",
            ColumnType.INTEGER,
            "Identifier of the campaign.",
            unique=True,
        ),
        Column(
            "campaign_name",
            ColumnType.TEXT,
            "Name of the campaign.",
            sortable=False,
        ),
        Column(
            "campaign_type",
            ColumnType.TEXT,
            "Kind of campaign, such as Product Launch, Webinar, PPC or Lead Gen.",
            sortable=False,
        ),
        Column(
            "channel",
            ColumnType.TEXT,
            "Marketing channel the campaign runs on, such as LinkedIn, Google Ads or Email.",
            sortable=False,
        ),
        Column(
            "start_date",
            ColumnType.DATE,
            "First day the campaign runs.",
        ),
        Column(
            "end_date",
            ColumnType.DATE,
            "Last day the campaign runs (planned, for an active campaign).",
            sortable=False,
        ),
        Column(
            "budget",
            ColumnType.MONEY,
            "Budget approved for the campaign, in USD.",
            sortable=False,
        ),
        Column(
            "spent",
            ColumnType.MONEY,
            "Amount spent on the campaign so far, in USD; never above the budget.",
            sortable=False,
        ),
        Column(
            "status",
            ColumnType.TEXT,
            "Lifecycle status: Active, Completed, Paused or Draft.",
            sortable=False,
        ),
        Column(
            "target_audience",
            ColumnType.TEXT,
            "Audience the campaign addresses, in words; may be absent.",
            nullable=True,
            sortable=False,
            max_length=1000,
        ),
    ),
    checks=(
        *not_null("campaign_id", severity=CRITICAL),
        *not_null(
            "campaign_name",
            "campaign_type",
            "channel",
            "start_date",
            "end_date",
            "budget",
            "spent",
            "status",
        ),
        Unique(columns=("campaign_id",), severity=CRITICAL),
        AcceptedValues(column="status", values=("Active", "Completed", "Paused", "Draft")),
        AcceptedValues(
            column="channel",
            values=("LinkedIn", "Google Ads", "Email", "Webinar", "Events"),
            severity=MINOR,
        ),
        Range(column="budget", minimum=0),
        Range(column="spent", minimum=0),
        Consistency(
            rule="spent_within_budget",
            violations="t.spent > t.budget",
            columns=("budget", "spent"),
        ),
        Consistency(
            rule="ends_after_start",
            violations="t.end_date < t.start_date",
            columns=("start_date", "end_date"),
        ),
        RowCount(minimum=1, maximum=10_000),
    ),
)

LEAD_EMAIL = Column(
    "email",
    ColumnType.TEXT,
    "Email address of the lead, unique exactly as stored (case-sensitive).",
    classification=PII,
    unique=True,
    max_length=254,  # the longest address SMTP carries (RFC 5321)
)

LEADS = Product(
    name="leads",
    source="leads",
    description="Prospects captured by marketing campaigns, with their score and funnel status.",
    key=("lead_id",),
    columns=(
        Column(
            "lead_id",
            ColumnType.INTEGER,
            "Identifier of the lead.",
            unique=True,
        ),
        Column(
            "first_name",
            ColumnType.TEXT,
            "Given name of the lead.",
            classification=PII,
            sortable=False,
        ),
        Column(
            "last_name",
            ColumnType.TEXT,
            "Family name of the lead.",
            classification=PII,
            sortable=False,
        ),
        LEAD_EMAIL,
        pseudonymous_key("email_key", LEAD_EMAIL),
        Column(
            "company",
            ColumnType.TEXT,
            "Company the lead works for; may be unknown.",
            classification=CONFIDENTIAL,
            nullable=True,
            sortable=False,
        ),
        Column(
            "job_title",
            ColumnType.TEXT,
            "Job title of the lead, such as CTO, CIO or VP of Engineering; may be unknown.",
            nullable=True,
            sortable=False,
        ),
        Column(
            "country",
            ColumnType.TEXT,
            "Country the lead is based in; may be unknown.",
            nullable=True,
            sortable=False,
        ),
        Column(
            "lead_source",
            ColumnType.TEXT,
            "Where the lead came from: " + ", ".join(LEAD_SOURCES) + ".",
            sortable=False,
        ),
        Column(
            "lead_score",
            ColumnType.INTEGER,
            "Sales-readiness score from 0 (cold) to 100 (ready to buy).",
        ),
        Column(
            "status",
            ColumnType.TEXT,
            "Funnel status: New, Nurturing, Qualified, Converted or Lost.",
        ),
        Column(
            "campaign_id",
            ColumnType.INTEGER,
            "Campaign that produced the lead.",
        ),
        Column(
            "created_at",
            ColumnType.TIMESTAMP,
            "When the lead was captured.",
        ),
        Column(
            "converted_at",
            ColumnType.TIMESTAMP,
            "When the lead became a customer; set exactly when the status is Converted.",
            nullable=True,
            sortable=False,
        ),
    ),
    checks=(
        *not_null("lead_id", severity=CRITICAL),
        *not_null(
            "first_name",
            "last_name",
            "email",
            "lead_source",
            "lead_score",
            "status",
            "campaign_id",
            "created_at",
        ),
        Unique(columns=("lead_id",), severity=CRITICAL),
        Unique(columns=("email",)),
        Pattern(column="email", regex=EMAIL_PATTERN, label="email"),
        AcceptedValues(
            column="status", values=("New", "Nurturing", "Qualified", "Converted", "Lost")
        ),
        AcceptedValues(
            column="lead_source",
            values=LEAD_SOURCES,
            severity=MINOR,
        ),
        Range(column="lead_score", minimum=0, maximum=100),
        References(
            columns=("campaign_id",),
            target_table="campaigns",
            target_columns=("campaign_id",),
            severity=CRITICAL,
        ),
        Consistency(
            rule="converted_at_when_converted",
            description="converted_at is set exactly when the status is Converted.",
            violations="(t.status = 'Converted') <> (t.converted_at IS NOT NULL)",
            columns=("status", "converted_at"),
        ),
        Consistency(
            rule="converted_after_created",
            violations="t.converted_at < t.created_at",
            columns=("created_at", "converted_at"),
            severity=MINOR,
        ),
        Freshness(column="created_at", max_age=LEADS_FRESHNESS),
        RowCount(minimum=1, maximum=10_000_000),
    ),
    freshness=LEADS_FRESHNESS,
)

CAMPAIGN_METRICS = Product(
    name="campaign-metrics",
    source="campaign_metrics",
    description=(
        "Daily delivery of each campaign: impressions, clicks, conversions, cost per click and "
        "conversion rate; one row per campaign and day."
    ),
    key=("metric_id",),
    definition=CAMPAIGN_METRICS_DEFINITION,
    columns=(
        Column(
            "metric_id",
            ColumnType.INTEGER,
            "Identifier of the daily metrics row.",
            unique=True,
        ),
        Column(
            "campaign_id",
            ColumnType.INTEGER,
            "Campaign the metrics belong to (unique together with metric_date).",
        ),
        Column(
            "metric_date",
            ColumnType.DATE,
            "Day the metrics were recorded for.",
        ),
        Column(
            "impressions",
            ColumnType.INTEGER,
            "Times the campaign's ads or messages were shown that day.",
            sortable=False,
        ),
        Column(
            "clicks",
            ColumnType.INTEGER,
            "Clicks on the campaign that day; never more than impressions.",
            sortable=False,
        ),
        Column(
            "conversions",
            ColumnType.INTEGER,
            "Conversions the channel reported that day; never more than clicks.",
            sortable=False,
        ),
        Column(
            "cost_per_click",
            ColumnType.MONEY,
            "That day's spend divided by its clicks, in USD, rounded to cents; "
            "null on a day without clicks.",
            nullable=True,
            sortable=False,
            precision=10,
        ),
        Column(
            "conversion_rate",
            ColumnType.DECIMAL,
            "Conversions divided by clicks times 100, rounded to 2 decimals; "
            "null on a day without clicks.",
            nullable=True,
            sortable=False,
            precision=7,
        ),
    ),
    checks=(
        *not_null("metric_id", severity=CRITICAL),
        *not_null("campaign_id", "metric_date", "impressions", "clicks", "conversions"),
        Unique(columns=("metric_id",), severity=CRITICAL),
        Unique(columns=("campaign_id", "metric_date")),
        Range(column="impressions", minimum=0),
        Range(column="clicks", minimum=0),
        Range(column="conversions", minimum=0),
        Range(column="cost_per_click", minimum=0),
        Range(column="conversion_rate", minimum=0, maximum=100),
        References(
            columns=("campaign_id",),
            target_table="campaigns",
            target_columns=("campaign_id",),
            severity=CRITICAL,
        ),
        Consistency(
            rule="funnel_narrows",
            description="clicks <= impressions and conversions <= clicks.",
            violations="t.clicks > t.impressions OR t.conversions > t.clicks",
            columns=("impressions", "clicks", "conversions"),
        ),
        Consistency(
            rule="within_campaign_dates",
            violations=(
                "NOT EXISTS (SELECT 1 FROM campaigns AS c WHERE c.campaign_id = t.campaign_id "
                "AND t.metric_date BETWEEN c.start_date AND c.end_date)"
            ),
            columns=("campaign_id", "metric_date"),
            reads=("campaigns",),
            severity=MINOR,
        ),
        Freshness(column="metric_date", max_age=DAILY_FRESHNESS),
        RowCount(minimum=1, maximum=10_000_000),
    ),
    freshness=DAILY_FRESHNESS,
)

WEBSITE_TRAFFIC = Product(
    name="website-traffic",
    source="website_traffic",
    description="Daily website visits per page and traffic source.",
    key=("traffic_id",),
    columns=(
        Column(
            "traffic_id",
            ColumnType.INTEGER,
            "Identifier of the daily traffic row.",
            unique=True,
        ),
        Column(
            "visit_date",
            ColumnType.DATE,
            "Day of the visits (unique together with page_url and source).",
        ),
        Column(
            "page_url",
            ColumnType.TEXT,
            "Path of the page visited, such as / or /pricing.",
            sortable=False,
            # part of the natural key's unique index: 500 characters of up to 4 bytes fit it
            max_length=500,
        ),
        Column(
            "source",
            ColumnType.TEXT,
            "Traffic source: Organic, Paid Search, Social Media or Email.",
            sortable=False,
        ),
        Column(
            "visitors",
            ColumnType.INTEGER,
            "Distinct visitors to the page from that source that day.",
            sortable=False,
        ),
        Column(
            "page_views",
            ColumnType.INTEGER,
            "Views of the page from that source that day; at least the visitors.",
            sortable=False,
        ),
        Column(
            "bounce_rate",
            ColumnType.DECIMAL,
            "Percentage of visits that left after this page alone, 0 to 100.",
            sortable=False,
            precision=5,
        ),
        Column(
            "avg_time_on_page",
            ColumnType.DECIMAL,
            "Average time spent on the page per view, in seconds.",
            sortable=False,
            precision=8,
        ),
    ),
    checks=(
        *not_null("traffic_id", severity=CRITICAL),
        *not_null(
            "visit_date",
            "page_url",
            "source",
            "visitors",
            "page_views",
            "bounce_rate",
            "avg_time_on_page",
        ),
        Unique(columns=("traffic_id",), severity=CRITICAL),
        Unique(columns=("visit_date", "page_url", "source")),
        AcceptedValues(column="source", values=("Organic", "Paid Search", "Social Media", "Email")),
        Pattern(column="page_url", regex=r"^/", label="path", severity=MINOR),
        Range(column="visitors", minimum=0),
        Range(column="page_views", minimum=0),
        Range(column="bounce_rate", minimum=0, maximum=100),
        Range(column="avg_time_on_page", minimum=0),
        Consistency(
            rule="views_at_least_visitors",
            violations="t.page_views < t.visitors",
            columns=("visitors", "page_views"),
        ),
        Freshness(column="visit_date", max_age=DAILY_FRESHNESS),
        RowCount(minimum=1, maximum=10_000_000),
    ),
    freshness=DAILY_FRESHNESS,
)

CAMPAIGN_PERFORMANCE = Product(
    name="campaign-performance",
    source="campaign_performance",
    description="Budget use and lead conversion of every campaign, one row per campaign.",
    key=("campaign_id",),
    is_table=False,
    definition=CAMPAIGN_PERFORMANCE_DEFINITION,
    columns=(
        Column(
            "campaign_id",
            ColumnType.INTEGER,
            "Identifier of the campaign.",
            unique=True,
        ),
        Column(
            "campaign_name",
            ColumnType.TEXT,
            "Name of the campaign.",
        ),
        Column(
            "channel",
            ColumnType.TEXT,
            "Marketing channel the campaign runs on.",
        ),
        Column(
            "budget",
            ColumnType.MONEY,
            "Budget approved for the campaign, in USD.",
        ),
        Column(
            "spent",
            ColumnType.MONEY,
            "Amount spent on the campaign so far, in USD.",
        ),
        Column(
            "remaining_budget",
            ColumnType.MONEY,
            "Budget minus spent, in USD.",
        ),
        Column(
            "budget_utilization_pct",
            ColumnType.DECIMAL,
            "Spent as a percentage of budget, 2 decimals; null when the budget is 0.",
            nullable=True,
            precision=7,
        ),
        Column(
            "total_leads",
            ColumnType.INTEGER,
            "Leads the campaign produced (0 when none).",
        ),
        Column(
            "converted_leads",
            ColumnType.INTEGER,
            "Leads of the campaign whose status is Converted.",
        ),
        Column(
            "conversion_rate",
            ColumnType.DECIMAL,
            "Converted leads as a percentage of the campaign's leads, 2 decimals; "
            "null when the campaign has no leads.",
            nullable=True,
            precision=7,
        ),
    ),
    checks=(
        NotNull(column="campaign_id", severity=CRITICAL),
        Unique(columns=("campaign_id",), severity=CRITICAL),
        Range(column="budget_utilization_pct", minimum=0, maximum=100, severity=MINOR),
    ),
)

LEAD_FUNNEL = Product(
    name="lead-funnel",
    source="lead_funnel",
    description="How many leads are at each funnel status, their average score and campaigns.",
    key=("status",),
    is_table=False,
    definition=LEAD_FUNNEL_DEFINITION,
    columns=(
        Column(
            "status",
            ColumnType.TEXT,
            "Funnel status of the leads counted in this row.",
            unique=True,
        ),
        Column(
            "lead_count",
            ColumnType.INTEGER,
            "Number of leads with this status.",
        ),
        Column(
            "avg_lead_score",
            ColumnType.DECIMAL,
            "Mean lead_score of those leads, rounded to 2 decimals.",
            precision=5,
        ),
        Column(
            "campaigns_contributing",
            ColumnType.INTEGER,
            "Number of distinct campaigns those leads came from.",
        ),
    ),
    checks=(
        NotNull(column="status", severity=CRITICAL),
        Unique(columns=("status",), severity=CRITICAL),
        AcceptedValues(
            column="status", values=("New", "Nurturing", "Qualified", "Converted", "Lost")
        ),
        RowCount(maximum=5, severity=MINOR),
    ),
)

DOMAIN = Domain(
    name="marketing",
    title="Marketing",
    description="Campaigns, leads and website traffic",
    owner="marketing-team@company.com",
    update_frequency="daily",
    data_classification="internal",
    database="marketing_db",
    products=(
        CAMPAIGNS,
        LEADS,
        CAMPAIGN_METRICS,
        WEBSITE_TRAFFIC,
        CAMPAIGN_PERFORMANCE,
        LEAD_FUNNEL,
    ),
    writes=WRITES,
    port=8002,
    rate_limit_per_minute=500,
)

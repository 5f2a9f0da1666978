"""Marketing schema: campaigns, leads, campaign metrics, website traffic and their views.

Revision ID: 0001_marketing
Revises:
Create Date: 2024-10-18

Nullable on purpose: campaigns.target_audience (free text, optional), leads.company,
leads.job_title and leads.country (a lead may arrive with only a name and an email),
leads.converted_at (set exactly when the lead is Converted), campaign_metrics.cost_per_click
and campaign_metrics.conversion_rate (undefined on a day without clicks). Everything else is
NOT NULL.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001_marketing"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = [
    """
    CREATE TABLE campaigns (
        campaign_id     serial PRIMARY KEY,
        campaign_name   text NOT NULL,
        campaign_type   text NOT NULL,
        channel         text NOT NULL,
        start_date      date NOT NULL,
        end_date        date NOT NULL,
        budget          numeric(14,2) NOT NULL,
        spent           numeric(14,2) NOT NULL DEFAULT 0,
        status          text NOT NULL,
        target_audience text,
        CONSTRAINT campaigns_status_check
            CHECK (status IN ('Active', 'Completed', 'Paused', 'Draft')),
        CONSTRAINT campaigns_budget_check CHECK (budget >= 0),
        CONSTRAINT campaigns_spent_check CHECK (spent >= 0),
        CONSTRAINT campaigns_spent_within_budget_check CHECK (spent <= budget),
        CONSTRAINT campaigns_dates_check CHECK (end_date >= start_date)
    )
    """,
    """
    CREATE TABLE leads (
        lead_id      serial PRIMARY KEY,
        first_name   text NOT NULL,
        last_name    text NOT NULL,
        email        text NOT NULL,
        company      text,
        job_title    text,
        country      text,
        lead_source  text NOT NULL,
        lead_score   integer NOT NULL,
        status       text NOT NULL,
        campaign_id  integer NOT NULL REFERENCES campaigns (campaign_id),
        created_at   timestamptz NOT NULL DEFAULT now(),
        converted_at timestamptz,
        -- exact and case-sensitive: two leads whose emails differ only in case are two leads
        CONSTRAINT leads_email_key UNIQUE (email),
        CONSTRAINT leads_email_check CHECK (email ~ '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$'),
        CONSTRAINT leads_lead_score_check CHECK (lead_score BETWEEN 0 AND 100),
        CONSTRAINT leads_status_check
            CHECK (status IN ('New', 'Nurturing', 'Qualified', 'Converted', 'Lost')),
        CONSTRAINT leads_converted_at_check
            CHECK ((converted_at IS NOT NULL) = (status = 'Converted')),
        CONSTRAINT leads_converted_after_created_check CHECK (converted_at >= created_at)
    )
    """,
    """
    CREATE TABLE campaign_metrics (
        metric_id       serial PRIMARY KEY,
        campaign_id     integer NOT NULL REFERENCES campaigns (campaign_id),
        metric_date     date NOT NULL,
        impressions     integer NOT NULL,
        clicks          integer NOT NULL,
        conversions     integer NOT NULL,
        cost_per_click  numeric(10,2),
        conversion_rate numeric(7,2),
        CONSTRAINT campaign_metrics_campaign_id_metric_date_key UNIQUE (campaign_id, metric_date),
        CONSTRAINT campaign_metrics_counts_check
            CHECK (impressions >= 0 AND clicks >= 0 AND conversions >= 0),
        CONSTRAINT campaign_metrics_clicks_check CHECK (clicks <= impressions),
        CONSTRAINT campaign_metrics_conversions_check CHECK (conversions <= clicks),
        CONSTRAINT campaign_metrics_cost_per_click_check CHECK (cost_per_click >= 0),
        CONSTRAINT campaign_metrics_conversion_rate_check
            CHECK (conversion_rate BETWEEN 0 AND 100)
    )
    """,
    """
    CREATE TABLE website_traffic (
        traffic_id       serial PRIMARY KEY,
        visit_date       date NOT NULL,
        page_url         text NOT NULL,
        source           text NOT NULL,
        visitors         integer NOT NULL,
        page_views       integer NOT NULL,
        bounce_rate      numeric(5,2) NOT NULL,
        avg_time_on_page numeric(8,2) NOT NULL, -- seconds
        CONSTRAINT website_traffic_visit_date_page_url_source_key
            UNIQUE (visit_date, page_url, source),
        CONSTRAINT website_traffic_source_check
            CHECK (source IN ('Organic', 'Paid Search', 'Social Media', 'Email')),
        CONSTRAINT website_traffic_counts_check CHECK (visitors >= 0 AND page_views >= 0),
        CONSTRAINT website_traffic_page_views_check CHECK (page_views >= visitors),
        CONSTRAINT website_traffic_bounce_rate_check CHECK (bounce_rate BETWEEN 0 AND 100),
        CONSTRAINT website_traffic_avg_time_on_page_check CHECK (avg_time_on_page >= 0)
    )
    """,
]

# One index per foreign key and per declared sort. campaign_metrics(campaign_id) and
# website_traffic(visit_date) also lead a unique index; the single-column ones keep the
# "every FK and every sort has its own index" rule literal.
_INDEXES = [
    "CREATE INDEX ix_campaigns_start_date ON campaigns (start_date)",
    "CREATE INDEX ix_leads_campaign_id ON leads (campaign_id)",
    "CREATE INDEX ix_leads_created_at ON leads (created_at)",
    "CREATE INDEX ix_leads_status ON leads (status)",
    "CREATE INDEX ix_leads_lead_score ON leads (lead_score)",
    "CREATE INDEX ix_campaign_metrics_campaign_id ON campaign_metrics (campaign_id)",
    "CREATE INDEX ix_campaign_metrics_metric_date ON campaign_metrics (metric_date)",
    "CREATE INDEX ix_website_traffic_visit_date ON website_traffic (visit_date)",
]

_VIEWS = [
    """
    -- campaign_performance: one row per campaign, every campaign (campaigns LEFT JOIN leads).
    -- remaining_budget = budget - spent. budget_utilization_pct = spent / budget * 100,
    -- rounded to 2 decimals, NULL when the budget is 0. total_leads = the campaign's leads;
    -- converted_leads = those with status Converted; conversion_rate = converted_leads /
    -- total_leads * 100, rounded to 2 decimals, NULL when the campaign has no leads.
    CREATE VIEW campaign_performance AS
    SELECT
        c.campaign_id::integer                                        AS campaign_id,
        c.campaign_name::text                                         AS campaign_name,
        c.channel::text                                               AS channel,
        c.budget::numeric(14,2)                                       AS budget,
        c.spent::numeric(14,2)                                        AS spent,
        (c.budget - c.spent)::numeric(14,2)                           AS remaining_budget,
        round(c.spent * 100 / NULLIF(c.budget, 0), 2)::numeric(7,2)   AS budget_utilization_pct,
        count(l.lead_id)::integer                                     AS total_leads,
        count(l.lead_id) FILTER (WHERE l.status = 'Converted')::integer AS converted_leads,
        round(
            count(l.lead_id) FILTER (WHERE l.status = 'Converted') * 100.0
            / NULLIF(count(l.lead_id), 0),
            2
        )::numeric(7,2)                                               AS conversion_rate
    FROM campaigns AS c
    LEFT JOIN leads AS l ON l.campaign_id = c.campaign_id
    GROUP BY c.campaign_id
    """,
    """
    -- lead_funnel: one row per lead status present in leads. lead_count = leads in that
    -- status; avg_lead_score = their mean lead_score, rounded to 2 decimals;
    -- campaigns_contributing = distinct campaigns those leads came from.
    CREATE VIEW lead_funnel AS
    SELECT
        l.status::text                               AS status,
        count(*)::integer                            AS lead_count,
        round(avg(l.lead_score), 2)::numeric(5,2)    AS avg_lead_score,
        count(DISTINCT l.campaign_id)::integer       AS campaigns_contributing
    FROM leads AS l
    GROUP BY l.status
    """,
]


def upgrade() -> None:
    """Create the marketing tables, their indexes and the analytics views."""
    for statement in (*_TABLES, *_INDEXES, *_VIEWS):
        op.execute(statement)


def downgrade() -> None:
    """Drop everything upgrade() created (views first, then tables; indexes go with them)."""
    for statement in (
        "DROP VIEW IF EXISTS lead_funnel",
        "DROP VIEW IF EXISTS campaign_performance",
        "DROP TABLE IF EXISTS website_traffic",
        "DROP TABLE IF EXISTS campaign_metrics",
        "DROP TABLE IF EXISTS leads",
        "DROP TABLE IF EXISTS campaigns",
    ):
        op.execute(statement)

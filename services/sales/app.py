"""The Sales domain service: its data products, served by the framework."""

from services.sales.products import DOMAIN
from shared.serving.app import create_domain_app

app = create_domain_app(DOMAIN)

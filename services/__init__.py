"""The DataMesh services: one package per domain, and the federation service (the mesh).

Adding a domain means adding its folder (products.py, sample.py, app.py), its migration tree
under migrations/<name>/, and its name here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from importlib import import_module
from typing import Any

from shared.products import Domain

DOMAINS: tuple[str, ...] = ("sales", "marketing")

SampleRows = dict[str, list[dict[str, Any]]]


def domain(name: str) -> Domain:
    """The declarations of a domain."""
    declared: Domain = import_module(f"services.{name}.products").DOMAIN
    return declared


def sample(name: str) -> Callable[[dt.date], SampleRows]:
    """The sample-data generator of a domain."""
    generator: Callable[[dt.date], SampleRows] = import_module(f"services.{name}.sample").sample
    return generator

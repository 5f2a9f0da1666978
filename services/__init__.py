"""The DataMesh services: one package per domain, and the federation service (the mesh).

A domain is found from one registration: an entry point of the `datamesh.domains` group naming
its package, in pyproject.toml (`<domain> = "services.<domain>"` under
`[project.entry-points."datamesh.domains"]`), or in the metadata of any installed distribution.
The package holds products.py (`DOMAIN`: its declarations and its policy: owner, port, rate
limit...), sample.py, scale.py and app.py; its migrations are migrations/<domain>/. Everything
else that lists the domains (ports, scopes, personas, the mesh's registry, generated files)
derives from `registered()`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from shared.declarations.products import Domain
from shared.security.auth import personas

ENTRY_POINT_GROUP = "datamesh.domains"

SampleRows = dict[str, list[dict[str, Any]]]

if TYPE_CHECKING:  # computed on first use (module __getattr__ below)
    DOMAINS: tuple[str, ...]  # the registered domains' names, in the order of their ports
    PERSONAS: dict[str, tuple[str, ...]]  # shared.security.auth.personas of DOMAINS


@cache
def _registry() -> dict[str, tuple[str, Domain]]:
    """Name -> (package, declaration) of every registered domain, in the order of their
    default ports (whatever order the entry points are found in)."""
    found: dict[str, tuple[str, Domain]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        package = entry.module
        if entry.name in found:
            if found[entry.name][0] == package:
                continue  # the same distribution found twice on the path
            raise RuntimeError(
                f"Domain '{entry.name}' is registered twice: as {found[entry.name][0]} and as "
                f"{package}"
            )
        declared = import_module(f"{package}.products").DOMAIN
        if not isinstance(declared, Domain) or declared.name != entry.name:
            raise RuntimeError(
                f"{package}.products.DOMAIN must be the Domain named '{entry.name}' (its "
                f"{ENTRY_POINT_GROUP} entry point)"
            )
        if declared.port is None:
            raise RuntimeError(f"Domain '{entry.name}' ({package}.products) declares no port")
        found[entry.name] = (package, declared)
    by_port: dict[int | None, str] = {}
    for name, (_, declared) in found.items():
        if declared.port in by_port:
            both = " and ".join(f"'{n}'" for n in sorted((by_port[declared.port], name)))
            raise RuntimeError(f"Domains {both} both declare port {declared.port}")
        by_port[declared.port] = name
    return dict(sorted(found.items(), key=lambda item: (item[1][1].port or 0, item[0])))


def registered() -> tuple[Domain, ...]:
    """The declarations of every registered domain, in the order of their default ports."""
    return tuple(declared for _, declared in _registry().values())


def __getattr__(name: str) -> Any:
    if name == "DOMAINS":
        return tuple(_registry())
    if name == "PERSONAS":
        return personas(tuple(_registry()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def package(name: str) -> str:
    """The package of a registered domain (products.py, sample.py, scale.py, app.py)."""
    try:
        return _registry()[name][0]
    except KeyError:
        raise KeyError(f"'{name}' is not a domain; known: {', '.join(_registry())}") from None


def domain(name: str) -> Domain:
    """The declarations of a domain."""
    package(name)  # a clear error for an unknown name
    return _registry()[name][1]


def sample(name: str) -> Callable[[dt.date], SampleRows]:
    """The sample-data generator of a domain."""
    generator: Callable[[dt.date], SampleRows] = import_module(f"{package(name)}.sample").sample
    return generator

"""`datamesh domain new NAME`: a new domain's package (with its page, README.md) and migration
tree, written from the templates in templates/ (`{{placeholder}}` text), and its one
registration line in pyproject.toml: nothing else in the project changes. Every refusal is
decided before anything is written."""

from __future__ import annotations

import datetime as dt
import json
import keyword
import re
import tomllib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from shared.declarations.products import RESERVED_DOMAIN_NAMES, Classification

TEMPLATES = Path(__file__).parent / "templates"
ENTRY_POINTS = '[project.entry-points."datamesh.domains"]'
NAME = re.compile(r"[a-z][a-z0-9_]*")
# an address that also reads as a plain Python string literal (no quotes, no backslashes)
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
CLASSIFICATIONS = tuple(c.value for c in Classification if c is not Classification.PII)
# names a domain may not take: what the framework reserves, and what this project's layout
# already uses (a package of services/, a folder of the repository, a section of alembic.ini)
RESERVED = {
    **RESERVED_DOMAIN_NAMES,
    "federation": "the mesh's package (services/federation/)",
    "scaffold": "this generator's package (services/scaffold/)",
    **{
        folder: f"a folder of the project ({folder}/)"
        for folder in (
            *("services", "shared", "migrations", "datamesh"),
            *("tests", "bench", "docs", "notebooks"),
        )
    },
    "admin": "the scope and persona of everything",
    **{section: "a section of alembic.ini" for section in ("loggers", "handlers", "formatters")},
}
# a template's path under templates/ -> where it is written ({name}: the domain's name)
FILES = {
    "services/__init__.py.tmpl": "services/{name}/__init__.py",
    "services/products.py.tmpl": "services/{name}/products.py",
    "services/sample.py.tmpl": "services/{name}/sample.py",
    "services/scale.py.tmpl": "services/{name}/scale.py",
    "services/writes.py.tmpl": "services/{name}/writes.py",
    "services/app.py.tmpl": "services/{name}/app.py",
    "services/README.md.tmpl": "services/{name}/README.md",
    "migrations/__init__.py.tmpl": "migrations/{name}/__init__.py",
    "migrations/env.py.tmpl": "migrations/{name}/env.py",
    "migrations/script.py.mako.tmpl": "migrations/{name}/script.py.mako",
    "migrations/versions/0001_schema.py.tmpl": "migrations/{name}/versions/0001_{name}_schema.py",
}
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class Refused(ValueError):
    """A domain the scaffold will not write: the message says why (a usage error)."""


@dataclass(frozen=True)
class NewDomain:
    """What the templates are filled with."""

    name: str
    owner: str
    port: int
    classification: str

    @property
    def values(self) -> dict[str, str]:
        title = self.name.replace("_", " ").title()
        return {
            "name": self.name,
            "title": title,
            "description": f"{title} data products",
            "owner": self.owner,
            "port": str(self.port),
            "classification": self.classification,
            "database": f"{self.name}_db",
            "date": dt.date.today().isoformat(),
        }


def find_root(start: Path) -> Path:
    """The project's root: the nearest directory from `start` upwards holding the
    pyproject.toml of the project named datamesh."""
    for folder in (start.resolve(), *start.resolve().parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            project = tomllib.loads(pyproject.read_text()).get("project", {})
            if project.get("name") == "datamesh":
                return folder
    raise Refused(f"no datamesh project in {start.resolve()} or above: run it in a checkout")


def editable_root() -> Path | None:
    """The folder this environment's datamesh is installed from in editable mode, or None
    (installed otherwise): where a new registration can be installed from."""
    try:
        found = distribution("datamesh").read_text("direct_url.json")
    except PackageNotFoundError:
        return None
    origin = json.loads(found or "{}")
    url = urlsplit(origin.get("url", ""))
    if not origin.get("dir_info", {}).get("editable") or url.scheme != "file":
        return None
    return Path(url2pathname(url.path)).resolve()


def registered_in(pyproject: str) -> dict[str, str]:
    """The domains a pyproject.toml's text registers: name -> package."""
    project = tomllib.loads(pyproject).get("project", {})
    found: dict[str, str] = project.get("entry-points", {}).get("datamesh.domains", {})
    return found


def refusal(
    root: Path, name: str, owner: str, port: int, known_ports: dict[str, int]
) -> tuple[str, str] | None:
    """Why a domain of that name, owner and port cannot be written under root, or None: the
    parameter at fault and the reason. `known_ports`: every service's port (the registered
    domains', the mesh's)."""
    if not NAME.fullmatch(name):
        return "NAME", (
            f"'{name}' is not a domain name: lowercase letters, digits and underscores, "
            "starting with a letter"
        )
    if keyword.iskeyword(name):
        return "NAME", f"'{name}' is a Python keyword: it cannot name a package"
    if name in RESERVED:
        return "NAME", f"'{name}' is reserved: {RESERVED[name]}"
    if name in known_ports or name in registered_in((root / "pyproject.toml").read_text()):
        return "NAME", f"'{name}' is already a domain"
    for folder in (f"services/{name}", f"migrations/{name}"):
        if (root / folder).exists():
            return "NAME", f"{folder} already exists"
    if not EMAIL.fullmatch(owner):
        return "--owner", f"'{owner}' is not an email address (like {name}-team@company.com)"
    taken = [service for service, at in known_ports.items() if at == port]
    if taken:
        return "--port", f"port {port} is {taken[0]}'s; each service needs its own"
    return None


def next_port(known_ports: dict[str, int]) -> int:
    """The first port after the highest one a service has that no service has."""
    port = max(known_ports.values()) + 1
    while port in known_ports.values():
        port += 1
    return port


def render(template: str, values: dict[str, str]) -> str:
    """The template's text with each `{{placeholder}}` replaced by its value."""
    text = (TEMPLATES / template).read_text()
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def registration(pyproject: str, name: str) -> str:
    """pyproject.toml's text with the domain's entry point after the last one of its table,
    every other line as it was."""
    lines = pyproject.splitlines(keepends=True)
    entry = f'{name} = "services.{name}"\n'
    if ENTRY_POINTS + "\n" not in lines:
        return pyproject.rstrip("\n") + f"\n\n{ENTRY_POINTS}\n{entry}"
    at = lines.index(ENTRY_POINTS + "\n") + 1
    while at < len(lines) and lines[at].strip() and not lines[at].startswith("["):
        at += 1
    while not lines[at - 1].strip() or lines[at - 1].lstrip().startswith("#"):
        at -= 1  # after the last entry, not after a comment or blank line closing the table
    if not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    return "".join([*lines[:at], entry, *lines[at:]])


def write(root: Path, domain: NewDomain) -> list[Path]:
    """Write the domain's files and register it in pyproject.toml; the paths written, relative
    to root. Either everything is written or nothing is."""
    values = domain.values
    files = {
        Path(target.format(name=domain.name)): render(template, values)
        for template, target in FILES.items()
    }
    pyproject = root / "pyproject.toml"
    before = pyproject.read_text()
    after = registration(before, domain.name)
    if registered_in(after).get(domain.name) != f"services.{domain.name}":
        raise Refused(
            "pyproject.toml's entry-point table could not be edited; add the line by hand"
        )
    folders = [root / "services" / domain.name, root / "migrations" / domain.name]
    try:
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        pyproject.write_text(after)
    except BaseException:
        for folder in folders:
            _remove(folder)
        pyproject.write_text(before)
        raise
    return [*files, Path("pyproject.toml")]


def next_steps(domain: NewDomain) -> str:
    """What to do next, printed once the domain is written."""
    return render("next_steps.md.tmpl", domain.values)


def _remove(folder: Path) -> None:
    if not folder.exists():
        return
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()

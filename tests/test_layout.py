"""A domain is its package and its migration tree, found from one registration: the framework
names no domain, and everything that lists the domains derives from the registered ones."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import yaml
from typer.testing import CliRunner, Result

import services
from services import DOMAINS, cli
from services.federation.settings import FederationSettings
from services.generated import GENERATORS, PER_DOMAIN, generated
from shared.declarations.products import Domain
from shared.security.auth import known_scopes
from shared.serving.app import create_domain_app
from shared.serving.hygiene import RequestLimits
from shared.settings import ServiceSettings
from shared.storage import migrations

ROOT = Path(__file__).resolve().parent.parent
DATAMESH = str(Path(sys.executable).parent / "datamesh")
ALEMBIC = str(Path(sys.executable).parent / "alembic")
# the framework: shared/, the mesh's machinery and the framework's migration branch; the mesh's
# metric declarations name the products they read (and shared/serving/swagger_ui/ holds Swagger UI's own
# files, vendored as published)
FRAMEWORK = [
    path
    for folder in ("shared", "services/federation", "migrations/framework")
    for path in sorted((ROOT / folder).rglob("*"))
    if path.is_file()
    and "__pycache__" not in path.parts
    and "swagger_ui" not in path.parts
    and path != ROOT / "services/federation/metrics.py"
]


def mentions(text: str, names: tuple[str, ...]) -> list[str]:
    """The names that appear in the text as whole words, in any case; `_`, `.`, `:` and `-`
    separate words (`<domain>_analyst`, `<DOMAIN>_DATABASE_URL`, `services.<domain>.app`)."""
    found = re.findall(
        rf"(?<![a-z0-9])({'|'.join(map(re.escape, names))})(?![a-z0-9])", text, re.IGNORECASE
    )
    return [name.lower() for name in found]


def test_a_domain_name_is_found_in_any_spelling_as_a_whole_word() -> None:
    names = ("sales", "marketing")
    for text in ("sales:pii", "SALES_DATABASE_URL", "services.sales.app:app", "# by Sales,"):
        assert mentions(text, names) == ["sales"], text
    assert mentions("marketing_analyst or sales_analyst", names) == ["marketing", "sales"]
    assert mentions("wholesales and remarketings, salesforce", names) == []


def test_no_domain_name_in_the_framework() -> None:
    assert len(FRAMEWORK) > 30  # shared/ and services/federation/ were found
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in FRAMEWORK
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if mentions(line, DOMAINS)
    ]
    assert found == [], "the framework names a domain:\n" + "\n".join(found)


def test_the_domains_are_the_registered_ones_in_the_order_of_their_ports() -> None:
    assert DOMAINS == ("sales", "marketing")
    assert [(d.name, d.port, d.rate_limit_per_minute) for d in services.registered()] == [
        ("sales", 8001, 1000),
        ("marketing", 8002, 500),
    ]
    assert cli.default_ports() == {"sales": 8001, "marketing": 8002, "mesh": 8000}


def test_datamesh_domains_lists_the_registered_domains() -> None:
    listed = CliRunner().invoke(cli.cli, ["domains"], env={"COLUMNS": "1000", "NO_COLOR": "1"})
    assert listed.exit_code == 0, listed.output
    assert listed.stdout == (
        "domain     owner                       classification  port  docs                      "
        "            products\n"
        "sales      sales-team@company.com      confidential    8001  http://127.0.0.1:8001/sales/"
        "docs      customers, products, orders, order-items, sales-summary, "
        "customer-lifetime-value, product-performance\n"
        "marketing  marketing-team@company.com  internal        8002  http://127.0.0.1:8002/"
        "marketing/docs  campaigns, leads, campaign-metrics, website-traffic, "
        "campaign-performance, lead-funnel\n"
    )
    as_json = CliRunner().invoke(cli.cli, ["domains", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == [
        {
            "name": "sales",
            "owner": "sales-team@company.com",
            "classification": "confidential",
            "port": 8001,
            "docs": "http://127.0.0.1:8001/sales/docs",
            "products": [
                *("customers", "products", "orders", "order-items", "sales-summary"),
                *("customer-lifetime-value", "product-performance"),
            ],
        },
        {
            "name": "marketing",
            "owner": "marketing-team@company.com",
            "classification": "internal",
            "port": 8002,
            "docs": "http://127.0.0.1:8002/marketing/docs",
            "products": [
                *("campaigns", "leads", "campaign-metrics", "website-traffic"),
                *("campaign-performance", "lead-funnel"),
            ],
        },
    ]


# --- the generated deployment files: build outputs of `datamesh generate`, not committed ------

GENERATED = (
    "docker-compose.yml",
    "deploy/prometheus/prometheus.yml",
    ".env.example",
    "alembic.ini",
    "deploy/k8s/base/domains/kustomization.yaml",
    "deploy/k8s/overlays/local/secrets/kustomization.yaml",
    "deploy/k8s/overlays/production/secrets/kustomization.yaml",
    *(f"deploy/trino/catalog/{name}.properties" for name in DOMAINS),
    # the Kubernetes manifests of each registered domain (tests/test_k8s.py checks them)
    *(
        f"deploy/k8s/base/domains/{name}/{file}"
        for file in (
            *("kustomization.yaml", "namespace.yaml", "postgres.yaml"),
            *("migrate.yaml", "api.yaml", "network.yaml"),
        )
        for name in DOMAINS
    ),
)


def generate(*args: str) -> Result:
    return CliRunner().invoke(cli.cli, ["generate", *args], env={"COLUMNS": "1000"})


def test_the_generated_files_are_ignored_and_not_committed() -> None:
    assert (*GENERATORS, *(p.format(domain=d) for p in PER_DOMAIN for d in DOMAINS)) == GENERATED
    tracked = subprocess.run(
        ["git", "ls-files", "--", *GENERATED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert tracked.stdout == ""
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *GENERATED],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == list(GENERATED)


def test_generate_writes_the_files_for_the_registered_domains(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    written = generate("--out", str(out))
    assert written.exit_code == 0, written.output
    assert written.stdout == "".join(f"wrote {out / name}\n" for name in GENERATED)
    again = generate("--out", str(out))
    assert again.stdout == "".join(f"up to date: {out / name}\n" for name in GENERATED)
    packages = {name: services.package(name) for name in DOMAINS}
    assert {name: (out / name).read_text() for name in GENERATED} == generated(
        services.registered(), packages
    )

    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    assert list(compose["services"]) == [
        *("sales-db", "marketing-db", "migrate", "sales", "marketing", "mesh", "jupyter"),
        *("prometheus", "grafana"),
    ]
    assert list(compose["volumes"]) == [
        *("sales-data", "marketing-data", "jupyter-work", "prometheus-data", "grafana-data"),
    ]
    grafana = compose["services"]["grafana"]
    assert {k: v for k, v in grafana["environment"].items() if k.endswith("_URL")} == {
        "DATAMESH_MESH_URL": "http://mesh:8000",
        "DATAMESH_SALES_URL": "http://sales:8001",
        "DATAMESH_MARKETING_URL": "http://marketing:8002",
    }
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == (
        "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in .env}"
    )
    assert grafana["volumes"][:2] == [
        "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro",
        "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro",
    ]
    assert compose["services"]["prometheus"]["volumes"][:2] == [
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
        "./deploy/prometheus/rules.yml:/etc/prometheus/rules.yml:ro",
    ]
    for d in services.registered():
        upper = d.name.upper()
        database = compose["services"][f"{d.name}-db"]
        assert database["environment"] == {
            "POSTGRES_DB": d.database,
            "POSTGRES_USER": f"{d.name}_user",
            "POSTGRES_PASSWORD": f"${{{upper}_DB_PASSWORD:?set {upper}_DB_PASSWORD in .env}}",
        }
        service = compose["services"][d.name]
        assert service["command"] == [
            *("python", "-m", "shared.serving.server", f"services.{d.name}.app:app"),
            *("--host", "0.0.0.0", "--port", str(d.port)),
        ]
        assert service["ports"] == [f"{d.port}:{d.port}"]
        assert service["environment"][f"{upper}_DATABASE_URL"] == (
            f"postgresql://{d.name}_service:${{{upper}_SERVICE_DB_PASSWORD:?set "
            f"{upper}_SERVICE_DB_PASSWORD in .env}}@{d.name}-db:5432/{d.database}"
        )
        assert compose["services"]["migrate"]["environment"][f"{upper}_MIGRATION_DATABASE_URL"] == (
            f"postgresql://{d.name}_user:${{{upper}_DB_PASSWORD}}@{d.name}-db:5432/{d.database}"
        )
    prometheus = yaml.safe_load((out / "deploy/prometheus/prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert (job["job_name"], job["metrics_path"], job["honor_labels"]) == (
        "datamesh",
        "/metrics",
        True,
    )
    assert [c["labels"]["service"] for c in job["static_configs"]] == [*DOMAINS, "mesh"]
    assert [t for c in job["static_configs"] for t in c["targets"]] == [
        *(f"{d.name}:{d.port}" for d in services.registered()),
        "mesh:8000",
    ]
    assert prometheus["rule_files"] == ["/etc/prometheus/rules.yml"]
    mesh = compose["services"]["mesh"]
    assert json.loads(mesh["environment"]["MESH_DOMAINS"]) == {
        "sales": "http://sales:8001",
        "marketing": "http://marketing:8002",
    }
    assert list(mesh["depends_on"]) == ["sales", "marketing"]

    variables = [
        line.partition("=")
        for line in (out / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert variables == [
        (name, "=", "")
        for name in (
            *("SALES_DB_PASSWORD", "MARKETING_DB_PASSWORD"),
            *("SALES_SERVICE_DB_PASSWORD", "MARKETING_SERVICE_DB_PASSWORD"),
            *("DATAMESH_JWT_SECRET", "DATAMESH_PSEUDONYM_SECRET", "DATAMESH_RATE_LIMIT_STORAGE"),
            "DATAMESH_TOKEN",
            *("GRAFANA_ADMIN_PASSWORD", "DATAMESH_GRAFANA_TOKEN"),
        )
    ]

    ini = configparser.RawConfigParser()
    ini.read(out / "alembic.ini")
    assert ini.sections()[:2] == ["sales", "marketing"]
    for name in DOMAINS:
        assert dict(ini[name]) == {
            "script_location": f"%(here)s/migrations/{name}",
            "version_locations": (
                f"\n%(here)s/migrations/{name}/versions\n%(here)s/migrations/framework/versions"
            ),
            "path_separator": "newline",
        }


def test_the_generated_alembic_ini_drives_the_alembic_command(tmp_path: Path) -> None:
    """`alembic --name <domain>` reads the generated alembic.ini; it finds migrations/ next to
    it, as at the project's root."""
    assert generate("--out", str(tmp_path)).exit_code == 0
    (tmp_path / "migrations").symlink_to(ROOT / "migrations")
    for name in DOMAINS:
        heads = subprocess.run(
            [ALEMBIC, "-c", str(tmp_path / "alembic.ini"), "--name", name, "heads"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert heads.returncode == 0, heads.stderr
        listed = sorted(line.split()[0] for line in heads.stdout.splitlines())
        assert tuple(listed) == migrations.head_revisions(name)


def test_generate_writes_at_the_projects_root_or_where_told(tmp_path: Path) -> None:
    here = Path.cwd()
    os.chdir(tmp_path)
    try:
        refused = generate()
    finally:
        os.chdir(here)
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"Error: no datamesh project in {tmp_path.resolve()} or above: run it in a checkout, "
        "or give --out\n"
    )
    assert list(tmp_path.iterdir()) == []


# --- a made-up third domain, registered as any domain is -----------------------------------

FINANCE_PRODUCTS = '''\
"""A made-up domain of the tests, registered by an entry point like every other."""

from shared.declarations.products import Domain

DOMAIN = Domain(
    name="finance",
    title="Finance",
    description="Invoices and payments",
    owner="finance-team@example.com",
    update_frequency="daily",
    data_classification="confidential",
    database="finance_db",
    port=8003,
    rate_limit_per_minute=250,
)
'''


@pytest.fixture
def finance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A `finance` domain in a distribution of its own: a package and its entry point in the
    `datamesh.domains` group (the one registration), on the path; the directory holding it."""
    package = tmp_path / "finance_domain"
    package.mkdir()
    (package / "__init__.py").write_text('"""The finance domain."""\n')
    (package / "products.py").write_text(FINANCE_PRODUCTS)
    metadata = tmp_path / "finance_domain-0.1.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: finance-domain\nVersion: 0.1\n"
    )
    (metadata / "entry_points.txt").write_text(
        f"[{services.ENTRY_POINT_GROUP}]\nfinance = finance_domain\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MESH_DOMAINS", raising=False)
    services._registry.cache_clear()
    try:
        yield tmp_path
    finally:
        services._registry.cache_clear()
        for module in ("finance_domain.products", "finance_domain"):
            sys.modules.pop(module, None)


def test_a_registered_domain_is_picked_up_everywhere(finance: Path) -> None:
    assert services.DOMAINS == ("sales", "marketing", "finance")
    assert services.domain("finance").owner == "finance-team@example.com"
    assert services.package("finance") == "finance_domain"
    assert cli.default_ports() == {"sales": 8001, "marketing": 8002, "finance": 8003, "mesh": 8000}
    assert services.PERSONAS == {
        "admin": ("admin",),
        "sales_analyst": ("sales:read", "mesh:read"),
        "marketing_analyst": ("marketing:read", "mesh:read"),
        "finance_analyst": ("finance:read", "mesh:read"),
        "analyst": ("sales:read", "marketing:read", "finance:read", "mesh:read"),
    }
    assert {"finance:read", "finance:pii", "finance:write"} <= set(known_scopes(services.DOMAINS))
    assert FederationSettings().domains == {
        "sales": "http://127.0.0.1:8001",
        "marketing": "http://127.0.0.1:8002",
        "finance": "http://127.0.0.1:8003",
    }
    app = create_domain_app(
        services.domain("finance"), settings=ServiceSettings(rate_limit_per_minute=None)
    )
    [limits] = [m for m in app.user_middleware if m.cls is RequestLimits]
    assert limits.kwargs["per_minute"] == 250
    location = migrations.alembic_config("finance").get_main_option("script_location")
    assert location == str(ROOT / "migrations" / "finance")  # found by convention
    files = generated(
        services.registered(), {name: services.package(name) for name in services.DOMAINS}
    )
    compose = files["docker-compose.yml"]
    assert "  finance-db:\n" in compose
    assert '"finance_domain.app:app", "--host", "0.0.0.0", "--port", "8003"' in compose
    assert '"finance": "http://finance:8003"' in compose
    assert "FINANCE_SERVICE_DB_PASSWORD=\n" in files[".env.example"]
    assert "[finance]\nscript_location = %(here)s/migrations/finance\n" in files["alembic.ini"]
    assert (
        "connection-user=${ENV:FINANCE_SQL_USER}\n"
        in files["deploy/trino/catalog/finance.properties"]
    )
    assert "  - finance\n" in files["deploy/k8s/base/domains/kustomization.yaml"]
    assert (
        '"finance": "http://finance-api.finance-domain.svc.cluster.local:8003"'
        in (files["deploy/k8s/base/domains/kustomization.yaml"])
    )
    assert (
        "envs: [finance.env]" in files["deploy/k8s/overlays/production/secrets/kustomization.yaml"]
    )
    api = files["deploy/k8s/base/domains/finance/api.yaml"]
    assert "- finance_domain.app:app" in api and "containerPort: 8003" in api


def test_the_command_line_offers_a_registered_domain(finance: Path) -> None:
    secret = "s" * 48
    env = os.environ | {"PYTHONPATH": str(finance), "COLUMNS": "1000", "NO_COLOR": "1"}
    env["DATAMESH_JWT_SECRET"] = secret

    def datamesh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DATAMESH, *args], capture_output=True, text=True, timeout=60, env=env, cwd=finance
        )

    helped = datamesh("up", "--help")
    assert helped.returncode == 0, helped.stderr
    assert re.search(r"--port-finance .*DATAMESH_PORT_FINANCE.*\[default: 8003\]", helped.stdout)
    refused = datamesh("up", "--data-dir", str(finance / "data"), "--port", "finance=8001")
    assert refused.returncode == 2
    assert "port 8001 is given to sales and finance" in refused.stderr
    assert not (finance / "data").exists()
    minted = datamesh("token", "--persona", "finance_analyst")
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), secret, algorithms=["HS256"], audience="datamesh")
    assert claims["scope"] == "finance:read mesh:read"


def test_a_domain_must_declare_its_port_and_a_port_of_its_own(
    finance: Path,
) -> None:
    products = finance / "finance_domain" / "products.py"
    products.write_text(FINANCE_PRODUCTS.replace("port=8003", "port=8002"))
    with pytest.raises(
        RuntimeError, match="Domains 'finance' and 'marketing' both declare port 8002"
    ):
        services.registered()
    services._registry.cache_clear()
    sys.modules.pop("finance_domain.products", None)
    products.write_text(FINANCE_PRODUCTS.replace("    port=8003,\n", ""))
    with pytest.raises(
        RuntimeError, match=r"Domain 'finance' \(finance_domain.products\) declares no port"
    ):
        services.registered()


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"name": "Finance"}, "Domain name 'Finance' must be lowercase letters"),
        ({"name": "fin-ance"}, "Domain name 'fin-ance' must be lowercase letters"),
        ({"name": "mesh"}, "Domain name 'mesh' is the federation service's"),
        (
            {"name": "framework"},
            "Domain name 'framework' is the framework's migration history's (migrations/framework/)",
        ),
        ({"port": 70000}, "Domain 'finance': port 70000 is not a TCP port"),
        ({"rate_limit_per_minute": -1}, "Domain 'finance': a negative rate limit"),
    ],
)
def test_a_declaration_with_a_bad_name_port_or_rate_is_refused(
    changes: dict[str, object], error: str
) -> None:
    fields: dict[str, object] = {
        "name": "finance",
        "title": "Finance",
        "description": "Invoices and payments",
        "owner": "finance-team@example.com",
        "update_frequency": "daily",
        "data_classification": "confidential",
        "database": "finance_db",
        "port": 8003,
    }
    with pytest.raises(ValueError, match=re.escape(error)):
        Domain(**(fields | changes))  # type: ignore[arg-type]

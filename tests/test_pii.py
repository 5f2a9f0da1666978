"""PII by classification, and the pseudonymous join key.

- Every PII column (customers.email, customers.phone, leads.first_name, leads.last_name,
  leads.email; the seed's leads have no phone column) is answered as null to a caller without
  the domain's pii scope, in JSON, CSV, NDJSON, Arrow, Parquet and single-row reads, with a
  `Masked-Columns` header; in clear (the sample's exact values) with the scope.
- A filter or an order on a PII column without the scope is a 403 naming it.
- email_key is HMAC-SHA256(secret, trimmed lower-cased email), computed in PostgreSQL: equal to
  Python's hmac for every sample email, readable and filterable with the read scope only.
- The mesh reads the domains with read scopes only: no request it makes carries, and no
  response it receives holds, an email address.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from asgi_lifespan import LifespanManager

from services import domain, sample
from services.federation.app import create_app
from services.federation.metrics import METRICS
from services.federation.settings import FederationSettings
from shared.declarations.checks import NotNull
from shared.declarations.products import (
    Classification,
    Column,
    ColumnType,
    Product,
    pseudonymous_key,
)
from shared.security.pseudonym import (
    SECRET_FILE,
    PseudonymKey,
    PseudonymSettings,
    ensure_pseudonym_secret,
)
from shared.serving.app import create_domain_app
from tests.conftest import AS_OF, PSEUDONYM_SECRET, TEST_SECRET, token

Row = dict[str, Any]
PROBLEM_JSON = "application/problem+json"
NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')

# domain -> (product, key, its PII columns in declaration order)
PII: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sales": ("customers", "customer_id", ("email", "phone")),
    "marketing": ("leads", "lead_id", ("first_name", "last_name", "email")),
}
PII_COLUMNS = [(name, column) for name, (_, _, columns) in PII.items() for column in columns]
FORMATS = ("json", "csv", "ndjson", "arrow", "parquet")


def bearer(*scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(*scopes)}"}


def reader(name: str) -> dict[str, str]:
    """A caller who reads the domain but not its PII (the domain's analyst persona)."""
    return bearer(f"{name}:read")


def pii_reader(name: str) -> dict[str, str]:
    return bearer(f"{name}:read", f"{name}:pii")


def sample_rows(name: str) -> dict[int, Row]:
    """The sample's rows of the domain's PII product by key: the exact values expected."""
    product, key, _ = PII[name]
    table = domain(name).product(product)
    assert table is not None
    return {row[key]: row for row in sample(name)(AS_OF)[table.source]}


def python_key(email: str) -> str:
    return hmac.new(
        PSEUDONYM_SECRET.encode(), email.strip().lower().encode(), hashlib.sha256
    ).hexdigest()


@pytest.fixture(scope="module")
def clients(sales: httpx.AsyncClient, marketing: httpx.AsyncClient) -> dict[str, httpx.AsyncClient]:
    return {"sales": sales, "marketing": marketing}


async def read_rows(
    client: httpx.AsyncClient, path: str, fmt: str, headers: dict[str, str], **params: str
) -> tuple[httpx.Response, list[Row]]:
    """A read in a format, its rows decoded (CSV values as text, NULL as '')."""
    response = await client.get(path, params={"format": fmt, **params}, headers=headers)
    assert response.status_code == 200, response.text
    if fmt == "json":
        rows: list[Row] = response.json()
    elif fmt == "ndjson":
        rows = [json.loads(line) for line in response.text.splitlines()]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(response.text)))
    elif fmt == "arrow":
        rows = pa.ipc.open_stream(response.content).read_all().to_pylist()
    else:
        rows = pq.read_table(io.BytesIO(response.content)).to_pylist()
    return response, rows


def text(value: Any, fmt: str) -> Any:
    """A sample value as the format renders it (CSV: text, NULL as the empty field)."""
    if fmt == "csv":
        return "" if value is None else str(value)
    return value


# --- masking in every format ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", PII)
async def test_pii_columns_are_masked_without_the_pii_scope(
    name: str, fmt: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    product, key, pii = PII[name]
    expected = sample_rows(name)
    response, rows = await read_rows(clients[name], f"/{name}/v1/{product}", fmt, reader(name))
    assert response.headers["masked-columns"] == ", ".join(pii)
    assert sorted(int(r[key]) for r in rows) == sorted(expected)
    null = text(None, fmt)
    for row in rows:
        assert [row[c] for c in pii] == [null] * len(pii), row
        source = expected[int(row[key])]
        # the other columns are there, in clear: the join key among them
        assert row["email_key"] == python_key(source["email"])
        assert row["country"] == text(source["country"], fmt)
    for row in rows:  # nothing of a PII value anywhere in the answer
        for column in pii:
            assert str(expected[int(row[key])][column]) not in response.text
    if fmt == "arrow":
        schema = pa.ipc.open_stream(response.content).schema
        for column in pii:
            field = schema.field(column)
            assert (field.type, field.nullable) == (pa.string(), True)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", PII)
async def test_pii_columns_are_clear_with_the_pii_scope(
    name: str, fmt: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    product, key, pii = PII[name]
    expected = sample_rows(name)
    for headers in (pii_reader(name), bearer("admin")):
        response, rows = await read_rows(clients[name], f"/{name}/v1/{product}", fmt, headers)
        assert "masked-columns" not in response.headers
        assert len(rows) == len(expected) == 15
        for row in rows:
            source = expected[int(row[key])]
            assert {c: row[c] for c in pii} == {c: text(source[c], fmt) for c in pii}


@pytest.mark.parametrize(("name", "column"), PII_COLUMNS)
async def test_selecting_one_pii_column_masks_and_names_only_it(
    name: str, column: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    product, key, _ = PII[name]
    expected = sample_rows(name)
    path = f"/{name}/v1/{product}"
    params = {"select": f"{key},{column}", "order": f"{key}.asc"}
    masked = await clients[name].get(path, params=params, headers=reader(name))
    assert masked.headers["masked-columns"] == column
    assert masked.json() == [{key: k, column: None} for k in sorted(expected)]
    clear = await clients[name].get(path, params=params, headers=pii_reader(name))
    assert "masked-columns" not in clear.headers
    assert clear.json() == [{key: k, column: expected[k][column]} for k in sorted(expected)]
    unselected = await clients[name].get(
        path, params={"select": f"{key},email_key"}, headers=reader(name)
    )
    assert unselected.status_code == 200
    assert "masked-columns" not in unselected.headers


@pytest.mark.parametrize("name", PII)
async def test_single_row_reads_are_masked_without_the_pii_scope(
    name: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    product, key, pii = PII[name]
    source = sample_rows(name)[3]
    client = clients[name]
    for path, params, headers in (
        (f"/{name}/v1/{product}/3", {}, {}),
        (f"/{name}/v1/{product}", {key: "eq.3"}, {"Accept": "application/vnd.pgrst.object+json"}),
    ):
        masked = await client.get(path, params=params, headers={**headers, **reader(name)})
        assert masked.status_code == 200, masked.text
        assert masked.headers["masked-columns"] == ", ".join(pii)
        row = masked.json()
        assert {c: row[c] for c in pii} == dict.fromkeys(pii)
        assert (row[key], row["email_key"]) == (3, python_key(source["email"]))
        clear = await client.get(path, params=params, headers={**headers, **pii_reader(name)})
        assert "masked-columns" not in clear.headers
        assert {c: clear.json()[c] for c in pii} == {c: source[c] for c in pii}
    one = await client.get(
        f"/{name}/v1/{product}/3", params={"select": f"{key},email"}, headers=reader(name)
    )
    assert (one.json(), one.headers["masked-columns"]) == ({key: 3, "email": None}, "email")


# --- no filter or order on a masked column ------------------------------------------------


def assert_pii_problem(response: httpx.Response, name: str, column: str, parameter: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert (problem["code"], problem["column"], problem["parameter"], problem["scope"]) == (
        "pii_column",
        column,
        parameter,
        f"{name}:pii",
    )
    assert f"'{column}'" in problem["detail"]
    assert f"'{name}:pii'" in problem["detail"]
    assert f'scope="{name}:pii"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(("name", "column"), PII_COLUMNS)
async def test_filtering_on_a_pii_column_needs_the_pii_scope(
    name: str, column: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    product, key, _ = PII[name]
    rows = sample_rows(name)
    value = rows[3][column]
    path = f"/{name}/v1/{product}"
    probes = [
        f"eq.{value}",
        f"like.{value[0]}*",
        "is.null",
        "not.is.null",
        f"in.({value})",
        f"gt.{value}",
        "nonsense",  # even a malformed filter: nothing about the column is answered
    ]
    for probe in probes:
        for fmt in ("json", "csv"):
            response = await clients[name].get(
                path, params={column: probe, "format": fmt}, headers=reader(name)
            )
            assert_pii_problem(response, name, column, column)
        count = await clients[name].get(
            path, params={column: probe}, headers={**reader(name), "Prefer": "count=exact"}
        )
        assert_pii_problem(count, name, column, column)
    allowed = await clients[name].get(
        path, params={column: f"eq.{value}", "select": key}, headers=pii_reader(name)
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == [{key: k} for k in sorted(rows) if rows[k][column] == value]
    assert {key: 3} in allowed.json()


@pytest.mark.parametrize(("name", "column"), PII_COLUMNS)
async def test_ordering_on_a_pii_column_needs_the_pii_scope(
    name: str, column: str, clients: dict[str, httpx.AsyncClient], database_urls: dict[str, str]
) -> None:
    product, key, _ = PII[name]
    path = f"/{name}/v1/{product}"
    for order in (f"{column}", f"{column}.desc", f"created_at.asc,{column}.asc.nullsfirst"):
        response = await clients[name].get(path, params={"order": order}, headers=reader(name))
        assert_pii_problem(response, name, column, "order")
    declared = domain(name).product(product)
    assert declared is not None
    with_scope = await clients[name].get(
        path, params={"order": f"{column}.desc", "select": key}, headers=pii_reader(name)
    )
    if not (declared.column(column) or pytest.fail(column)).sortable:
        # with the scope, the ordinary rule: this column has no index to sort on
        assert with_scope.status_code == 400, with_scope.text
        assert with_scope.json()["code"] == "invalid_value"
        return
    assert with_scope.status_code == 200, with_scope.text
    with psycopg.connect(database_urls[name]) as conn:
        expected = [
            {key: k}
            for (k,) in conn.execute(
                f'SELECT "{key}" FROM "{declared.source}" ORDER BY "{column}" DESC, "{key}"'
            )
        ]
    assert with_scope.json() == expected


async def test_cursors_hold_only_key_values(marketing: httpx.AsyncClient) -> None:
    """A cursor holds the order's values and the key's: the key is never PII, and an order on
    a PII column is refused without the scope, so no cursor of a masked read holds PII."""
    response = await marketing.get(
        "/marketing/v1/leads",
        params={"limit": "4", "order": "lead_score.desc"},
        headers=reader("marketing"),
    )
    link = NEXT_LINK.search(response.headers["link"])
    assert link is not None
    cursor = httpx.URL(link.group(1)).params["cursor"]
    payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    fourth = response.json()[3]
    assert payload == {
        "o": ["lead_score.desc.nullsfirst", "lead_id.asc.nullslast"],
        "v": [str(fourth["lead_score"]), str(fourth["lead_id"])],
    }
    following = await marketing.get(link.group(1), headers=reader("marketing"))
    assert following.status_code == 200
    assert following.headers["masked-columns"] == "first_name, last_name, email"


def test_no_product_key_is_pii_or_computed() -> None:
    for name in PII:
        for product in domain(name).products:
            for key in product.key:
                column = product.column(key)
                assert column is not None
                assert column.classification is not Classification.PII
                assert column.computed is None
    email = Column("email", ColumnType.TEXT, "An email.", classification=Classification.PII)
    with pytest.raises(ValueError, match="key column 'email' is PII"):
        Product(name="people", source="people", description=".", columns=(email,), key=("email",))


# --- the pseudonymous join key ----------------------------------------------------------------


@pytest.mark.parametrize("name", PII)
async def test_email_key_is_the_hmac_of_the_trimmed_lower_cased_email(
    name: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    product, key, _ = PII[name]
    expected = sample_rows(name)
    response = await clients[name].get(
        f"/{name}/v1/{product}",
        params={"select": f"{key},email_key", "order": f"{key}.asc"},
        headers=reader(name),
    )
    assert response.status_code == 200
    assert "masked-columns" not in response.headers
    assert response.json() == [
        {key: k, "email_key": python_key(expected[k]["email"])} for k in sorted(expected)
    ]
    assert len({r["email_key"] for r in response.json()}) == 15


async def test_email_key_is_equal_across_domains_for_the_converted_leads(
    sales: httpx.AsyncClient, marketing: httpx.AsyncClient
) -> None:
    customers = (
        await sales.get(
            "/sales/v1/customers",
            params={"select": "customer_id,email_key"},
            headers=reader("sales"),
        )
    ).json()
    leads = (
        await marketing.get(
            "/marketing/v1/leads",
            params={"select": "lead_id,email_key", "status": "eq.Converted"},
            headers=reader("marketing"),
        )
    ).json()
    by_key = {c["email_key"]: c["customer_id"] for c in customers}
    emails = {c["customer_id"]: c["email"] for c in sample_rows("sales").values()}
    lead_emails = {lead["lead_id"]: lead["email"] for lead in sample_rows("marketing").values()}
    matched = {lead["lead_id"]: by_key.get(lead["email_key"]) for lead in leads}
    assert len(matched) == 3
    for lead_id, customer_id in matched.items():
        assert customer_id is not None
        # one of them differs in case: the key ignores it, as the oracle's join does
        assert lead_emails[lead_id].strip().lower() == emails[customer_id].strip().lower()
    assert any(lead_emails[lead] != emails[customer] for lead, customer in matched.items())


@pytest.mark.parametrize("name", PII)
async def test_email_key_can_be_filtered_with_the_read_scope(
    name: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    product, key, _ = PII[name]
    rows = sample_rows(name)
    path = f"/{name}/v1/{product}"
    one, two = python_key(rows[3]["email"]), python_key(rows[7]["email"])
    found = await clients[name].get(
        path, params={"email_key": f"eq.{one}", "select": key}, headers=reader(name)
    )
    assert found.json() == [{key: 3}]
    both = await clients[name].get(
        path,
        params={"email_key": f"in.({two},{one})", "select": key, "order": f"{key}.desc"},
        headers={**reader(name), "Prefer": "count=exact"},
    )
    assert (both.json(), both.headers["content-range"]) == ([{key: 7}, {key: 3}], "0-1/2")
    none = await clients[name].get(
        path, params={"email_key": f"eq.{python_key('nobody@example.com')}"}, headers=reader(name)
    )
    assert none.json() == []
    unsortable = await clients[name].get(path, params={"order": "email_key"}, headers=reader(name))
    assert unsortable.status_code == 400
    assert unsortable.json()["code"] == "invalid_value"


SECRETS = ["s" * 32, "k" * 64, "long-" * 30, "ünïcödé-secret-of-more-than-32-chars!"]
EMAILS = [
    "ana.silva@QuartzLine.io",
    "  Ben.Okoro@Harbourpoint.com ",
    "BEN.OKORO@HARBOURPOINT.COM",
    "josé@exemple.fr",
    "",
]


def test_the_sql_hmac_is_rfc_2104_for_any_secret_length(database_urls: dict[str, str]) -> None:
    """The expression the domains run, on PostgreSQL, against Python's hmac: short, block-sized
    and longer-than-a-block secrets (hashed first), surrounding spaces, case, non-ASCII."""
    with psycopg.connect(database_urls["sales"]) as conn:
        for secret in SECRETS:
            key = PseudonymKey.from_secret(secret)
            for email in EMAILS:
                params: dict[str, Any] = {"value": email}

                def bind(value: bytes, params: dict[str, Any] = params) -> str:
                    name = f"p{len(params)}"
                    params[name] = value
                    return f"%({name})s"

                statement = f"SELECT {key.sql('%(value)s::text', bind)}"
                (computed,) = conn.execute(statement, params).fetchone() or ("",)
                expected = hmac.new(
                    secret.encode(), email.strip().lower().encode(), hashlib.sha256
                ).hexdigest()
                assert computed == expected, (secret, email)
                assert secret not in statement
                assert "%(value)s" in statement and "%(p1)s" in statement


def test_the_key_keeps_the_secret_out_of_its_repr() -> None:
    key = PseudonymKey.from_secret(PSEUDONYM_SECRET)
    assert PSEUDONYM_SECRET not in repr(key)
    assert key.inner.hex() not in repr(key)


def test_the_secret_has_no_default_and_up_creates_one(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAMESH_PSEUDONYM_SECRET", raising=False)
    settings = PseudonymSettings(data_dir=tmp_path)
    assert settings.secret() is None
    with pytest.raises(RuntimeError, match="DATAMESH_PSEUDONYM_SECRET_FILE"):
        settings.key()
    path = ensure_pseudonym_secret(tmp_path)
    assert path == tmp_path / SECRET_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    created = path.read_text()
    assert len(created) >= 48
    assert PseudonymSettings(data_dir=tmp_path).secret() == created
    assert ensure_pseudonym_secret(tmp_path).read_text() == created  # kept, not replaced
    with pytest.raises(ValueError, match="production needs an explicitly configured"):
        PseudonymSettings(env="production", data_dir=tmp_path)
    with pytest.raises(ValueError, match="at least 32 characters"):
        PseudonymSettings(pseudonym_secret="short")


async def test_a_domain_without_a_secret_refuses_to_start(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, database_urls: dict[str, str]
) -> None:
    monkeypatch.delenv("DATAMESH_PSEUDONYM_SECRET", raising=False)
    monkeypatch.setenv("DATAMESH_DATA_DIR", str(tmp_path))
    app = create_domain_app(domain("sales"), database_url=database_urls["sales"])
    with pytest.raises(RuntimeError, match="No pseudonymisation secret is configured"):
        async with LifespanManager(app):
            pass


# --- contract, metadata, OpenAPI ------------------------------------------------------------


@pytest.mark.parametrize("name", PII)
async def test_metadata_shows_the_scope_that_reads_each_column_in_clear(
    name: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    product, _, pii = PII[name]
    metadata = (await clients[name].get(f"/{name}/v1/metadata", headers=reader(name))).json()
    columns = {c["name"]: c for c in metadata["tables"][product]["columns"]}
    for column in columns.values():
        scope = f"{name}:pii" if column["name"] in pii else f"{name}:read"
        assert column["read_in_clear_scope"] == scope, column
        assert (column["classification"] == "pii") == (column["name"] in pii)
    assert (columns["email_key"]["classification"], columns["email_key"]["computed_from"]) == (
        "confidential",
        "email",
    )
    assert columns["email"]["computed_from"] is None


@pytest.mark.parametrize("name", PII)
async def test_contract_shows_email_key_as_computed_from_email(
    name: str, clients: dict[str, httpx.AsyncClient]
) -> None:
    product, _, _ = PII[name]
    source = (domain(name).product(product) or pytest.fail(product)).source
    document = (
        await clients[name].get(
            f"/{name}/v1/products/{product}/contract",
            params={"format": "json"},
            headers=reader(name),
        )
    ).json()
    email_key = next(p for p in document["schema"][0]["properties"] if p["name"] == "email_key")
    assert "physicalName" not in email_key
    assert email_key["transformSourceObjects"] == [f"{source}.email"]
    assert "lower(btrim(email))" in email_key["transformLogic"]
    assert (email_key["classification"], email_key["physicalType"]) == ("confidential", "text")
    assert "customProperties" not in email_key


async def test_openapi_documents_masking(sales: httpx.AsyncClient) -> None:
    spec = (await sales.get("/sales/openapi.json")).json()
    read = spec["paths"]["/sales/v1/customers"]["get"]
    ok = read["responses"]["200"]
    assert "Masked-Columns" in ok["headers"]
    assert "403" in read["responses"]
    row = ok["content"]["application/json"]["schema"]["items"]
    email = row["properties"]["email"]
    assert {"type": "null"} in email["anyOf"]
    assert "sales:pii" in email["description"]
    assert row["properties"]["email_key"]["type"] == "string"
    orders = spec["paths"]["/sales/v1/orders"]["get"]["responses"]["200"]
    assert "Masked-Columns" not in orders["headers"]  # orders has no PII column


# --- the mesh never sees an email -------------------------------------------------------------


@pytest.fixture(scope="module")
async def recorded_mesh(
    domain_urls: dict[str, str],
) -> AsyncIterator[tuple[httpx.AsyncClient, list[httpx.Response]]]:
    """A mesh over the sample whose every exchange with a domain is recorded, bodies read."""
    exchanges: list[httpx.Response] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        exchanges.append(response)

    app = create_app(FederationSettings.model_validate({"domains": domain_urls}))
    async with LifespanManager(app) as manager:
        app.state.registry.client.event_hooks["response"].append(record)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url="http://test",
            # an analyst of every domain without pii: row-level metrics need the domains' reads
            headers=bearer("mesh:read", "sales:read", "marketing:read"),
        ) as client:
            yield client, exchanges


async def test_the_mesh_never_sees_an_email(
    recorded_mesh: tuple[httpx.AsyncClient, list[httpx.Response]],
) -> None:
    client, exchanges = recorded_mesh
    for metric in METRICS:
        for params in ({}, {"since": "2024-07-01", "until": "2024-10-18"}):
            response = await client.get(f"/mesh/v1/{metric.name}", params=params)
            assert response.status_code == 200, response.text
            assert "@" not in response.text
    emails = {
        e
        for name in PII
        for row in sample_rows(name).values()
        for e in (row["email"], row["email"].lower())
    }
    pii_names = {column for _, column in PII_COLUMNS}
    products = [e for e in exchanges if e.request.headers["accept"].endswith("arrow.stream")]
    assert len(products) >= 2 * len(METRICS)
    assert {e.request.url.path for e in products} >= {
        "/sales/v1/customers",
        "/marketing/v1/leads",
    }
    for exchange in exchanges:
        request = exchange.request
        # rows, or a revalidation that found them current (a GET's 304, a POST read's 412)
        assert exchange.status_code in (200, 304, 412), exchange.text
        # the mesh's own token: read scopes only, never pii
        claims = jwt.decode(
            request.headers["authorization"].removeprefix("Bearer "),
            TEST_SECRET,
            algorithms=["HS256"],
            audience="datamesh",
        )
        assert sorted(claims["scope"].split()) == ["marketing:read", "sales:read"]
        # no request names a PII column or carries an address
        assert "@" not in str(request.url)
        assert "%40" not in str(request.url)
        assert b"@" not in request.content and b"%40" not in request.content  # a POST read's
        for name, value in request.url.params.multi_items():
            assert name not in pii_names
            if name == "select":
                assert not set(value.split(",")) & pii_names, request.url
        # no response holds an address nor a masked column
        assert "masked-columns" not in exchange.headers
        assert not any(email.encode() in exchange.content for email in emails)
        if exchange in products and exchange.status_code == 200:
            table = pa.ipc.open_stream(exchange.content).read_all()
            assert not set(table.column_names) & pii_names
            for column in table.columns:
                if pa.types.is_string(column.type):
                    assert not any("@" in v for v in column.to_pylist() if v), column
    joined = [e for e in products if "email_key" in e.request.url.params.get("select", "")]
    assert {e.request.url.path for e in joined} == {"/sales/v1/customers", "/marketing/v1/leads"}


def test_every_pii_product_is_declared_the_same_way() -> None:
    """Both domains: the PII product declares email_key right after email, computed from it."""
    for name, (product, _, pii) in PII.items():
        declared = domain(name).product(product)
        assert declared is not None
        names = list(declared.column_names)
        assert names[names.index("email") + 1] == "email_key"
        email_key = declared.column("email_key")
        assert email_key is not None and email_key.computed is not None
        assert email_key.computed.source == "email"
        assert (email_key.filterable, email_key.sortable, email_key.nullable) == (
            True,
            False,
            False,
        )
        assert tuple(c.name for c in declared.columns if c.is_pii) == pii
    leads = domain("marketing").product("leads")
    assert leads is not None and leads.column("phone") is None  # the seed's leads have no phone


def test_computed_columns_are_declared_from_stored_text_and_never_keys() -> None:
    email = Column("email", ColumnType.TEXT, "An email.", classification=Classification.PII)
    number = Column("number", ColumnType.INTEGER, "A number.")
    key = Column("k", ColumnType.INTEGER, "A key.")
    with pytest.raises(ValueError, match="key column 'email_key' is PII or computed"):
        Product(
            name="p",
            source="p",
            description=".",
            columns=(email, pseudonymous_key("email_key", email)),
            key=("email_key",),
        )
    with pytest.raises(ValueError, match="'number', which is not a stored text column"):
        Product(
            name="p",
            source="p",
            description=".",
            columns=(key, number, pseudonymous_key("number_key", number)),
            key=("k",),
        )
    with pytest.raises(ValueError, match="checks run on stored columns only"):
        Product(
            name="p",
            source="p",
            description=".",
            columns=(key, email, pseudonymous_key("email_key", email)),
            key=("k",),
            checks=(NotNull(column="email_key"),),
        )

"""The Python client (`datamesh.Mesh`) against the real services over HTTP: the sample data's
known figures, the dtypes it promises, the keyset cursor followed page by page, and errors that
carry the services' problem details."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from datamesh import DataMeshError, Mesh
from services import DOMAINS, PERSONAS
from services.federation.app import create_app
from services.federation.settings import FederationSettings
from tests.conftest import token
from tests.servers import served

SCOPES = PERSONAS["analyst"]  # every domain's read and mesh:read
ORDERS_TOTAL = Decimal("1193319.36")  # tests/test_sample_figures.py


@pytest.fixture(scope="module", autouse=True)
def _no_client_settings() -> Iterator[None]:
    """The client's environment variables unset: a developer's own must not steer the tests."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("DATAMESH_URL", "DATAMESH_TOKEN", "DATAMESH_DOMAINS"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def mesh_url(domain_urls: dict[str, str]) -> Iterator[str]:
    """The mesh over the sample data, on a real port."""
    with served(create_app(FederationSettings.model_validate({"domains": domain_urls}))) as url:
        yield url


@pytest.fixture(scope="module")
def mesh(mesh_url: str) -> Iterator[Mesh]:
    """A client with an analyst's read-only token (no PII), locating the domains by itself."""
    with Mesh(mesh_url, token(*SCOPES)) as client:
        yield client


@contextmanager
def free_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on (bound, not listening, while in use)."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


class Recording(httpx.HTTPTransport):
    """An HTTP transport that remembers every URL it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[httpx.URL] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        return super().handle_request(request)


# --- locating the domains --------------------------------------------------------------


def test_domains_are_located_through_the_mesh_catalog(
    mesh_url: str, domain_urls: dict[str, str]
) -> None:
    recording = Recording()
    with Mesh(mesh_url + "/mesh/", token(*SCOPES), transport=recording) as client:
        assert client.url == mesh_url
        assert client.domains == domain_urls
        assert client.domains == domain_urls  # asked once
    assert [u.path for u in recording.urls] == ["/mesh/v1/catalog"]


def test_url_token_and_domains_from_the_environment(
    mesh_url: str, domain_urls: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a token without mesh:read: the domains must come from DATAMESH_DOMAINS, not the catalog
    monkeypatch.setenv("DATAMESH_URL", mesh_url)
    monkeypatch.setenv("DATAMESH_TOKEN", token("sales:read"))
    monkeypatch.setenv("DATAMESH_DOMAINS", json.dumps(domain_urls))
    with Mesh() as client:
        assert client.url == mesh_url
        assert client.domains == domain_urls
        assert client.count("sales", "orders") == 20


def test_a_missing_token_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAMESH_TOKEN", raising=False)
    with pytest.raises(DataMeshError) as raised:
        Mesh("http://127.0.0.1:8000")
    assert "set DATAMESH_TOKEN" in str(raised.value)
    assert "datamesh token --persona analyst" in str(raised.value)
    assert raised.value.status is None


def test_without_mesh_read_the_domains_cannot_be_located(mesh_url: str) -> None:
    with Mesh(mesh_url, token("sales:read")) as client, pytest.raises(DataMeshError) as raised:
        client.read("sales", "orders")
    error = raised.value
    assert error.status == 403
    assert error.code == "insufficient_scope"
    assert error.problem["scope"] == "mesh:read"
    assert "Could not locate the domains from the mesh catalog" in str(error)
    assert "DATAMESH_DOMAINS" in str(error)


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="is not an http"):
        Mesh("127.0.0.1:8000", "t")
    monkeypatch.setenv("DATAMESH_DOMAINS", "sales=http://127.0.0.1:8001")
    with pytest.raises(ValueError, match="DATAMESH_DOMAINS must be JSON"):
        Mesh("http://127.0.0.1:8000", "t")


# --- reading products -------------------------------------------------------------------


def test_the_ten_most_valuable_customers(mesh: Mesh) -> None:
    top = mesh.read("sales", "customer-lifetime-value", order="lifetime_value.desc", limit=10)
    assert len(top) == 10
    first = top.iloc[0]
    assert first["customer_id"] == 11
    assert first["customer_name"] == "Granite Peak Energy"
    assert first["total_orders"] == 2
    assert first["lifetime_value"] == 199887.50
    assert first["avg_order_value"] == 99943.75
    assert first["last_order_date"] == pd.Timestamp("2024-10-09")
    assert list(top["customer_id"][:3]) == [11, 1, 4]
    assert top["lifetime_value"].is_monotonic_decreasing


def test_dtypes(mesh: Mesh) -> None:
    clv = mesh.read("sales", "customer-lifetime-value")
    assert clv["customer_id"].dtype == "int32"
    assert clv["total_orders"].dtype == "int32"
    assert clv["lifetime_value"].dtype == "float64"
    assert clv["avg_order_value"].dtype == "float64"
    assert clv["last_order_date"].dtype == "datetime64[us]"
    assert pd.api.types.is_string_dtype(clv["customer_name"])
    # the customer without orders: no average, no last order
    idle = clv.set_index("customer_id").loc[15]
    assert idle["customer_name"] == "Cascade Learning Collective"
    assert idle["total_orders"] == 0 and idle["lifetime_value"] == 0
    assert pd.isna(idle["avg_order_value"]) and pd.isna(idle["last_order_date"])

    customers = mesh.read("sales", "customers", order="customer_id")
    assert str(customers["created_at"].dtype) == "datetime64[us, UTC]"
    assert customers["created_at"][0] == pd.Timestamp("2023-04-27 10:00", tz="UTC")


def test_money_is_float_by_default_and_decimal_when_exact(mesh: Mesh) -> None:
    floats = mesh.read("sales", "orders", select="total_amount")
    assert floats["total_amount"].dtype == "float64"
    assert round(floats["total_amount"].sum(), 2) == float(ORDERS_TOTAL)

    exact = mesh.read("sales", "orders", select="total_amount", exact=True)
    assert exact["total_amount"].dtype == object
    assert all(
        isinstance(v, Decimal) and v.as_tuple().exponent == -2 for v in exact["total_amount"]
    )
    assert sum(exact["total_amount"], Decimal("0.00")) == ORDERS_TOTAL


def test_filters_as_keywords_as_a_dict_and_repeated(mesh: Mesh) -> None:
    orders = mesh.read("sales", "orders")
    expected = orders[(orders["order_status"] == "Completed") & (orders["total_amount"] > 50000)]
    assert len(expected) == 8 and expected["total_amount"].sum() == 630480.00

    by_keywords = mesh.read("sales", "orders", order_status="eq.Completed", total_amount="gt.50000")
    by_dict = mesh.read(
        "sales", "orders", filters={"order_status": "eq.Completed", "total_amount": "gt.50000"}
    )
    pd.testing.assert_frame_equal(by_keywords, expected.reset_index(drop=True))
    pd.testing.assert_frame_equal(by_dict, by_keywords)

    between = mesh.read("sales", "orders", total_amount=["gte.50000", "lt.90000"])
    in_pandas = orders[orders["total_amount"].between(50000, 90000, inclusive="left")]
    assert list(between["order_id"]) == list(in_pandas["order_id"]) and len(between) == 8
    usa = mesh.read("sales", "customers", country="in.(USA,Canada)", select="country")
    assert set(usa["country"]) == {"USA", "Canada"} and len(usa) == 7


def test_select_order_and_offset(mesh: Mesh) -> None:
    page = mesh.read(
        "sales",
        "orders",
        select=["total_amount", "order_id"],
        order=["total_amount.desc"],
        limit=3,
        offset=1,
    )
    assert list(page.columns) == ["total_amount", "order_id"]
    assert list(page["order_id"]) == [19, 5, 6]
    assert list(page["total_amount"]) == [105300.00, 94587.50, 91410.00]


def test_no_rows_keeps_the_columns_and_their_types(mesh: Mesh) -> None:
    empty = mesh.read("sales", "orders", order_status="eq.Cancelled")
    assert empty.empty
    assert empty["order_date"].dtype == "datetime64[us]"
    assert empty["total_amount"].dtype == "float64"
    assert len(empty.columns) == 8


def test_pii_is_masked_without_the_pii_scope(mesh: Mesh) -> None:
    customers = mesh.read("sales", "customers")
    assert customers.attrs["masked_columns"] == ["email", "phone"]
    assert customers["email"].isna().all() and customers["phone"].isna().all()
    assert customers["email_key"].str.fullmatch("[0-9a-f]{64}").all()


def test_count(mesh: Mesh) -> None:
    assert mesh.count("sales", "orders") == 20
    assert mesh.count("sales", "orders", order_status="eq.Completed") == len(
        mesh.read("sales", "orders", order_status="eq.Completed")
    )
    assert mesh.count("marketing", "leads", filters={"status": "eq.Converted"}) == 3


# --- the keyset cursor ------------------------------------------------------------------


def test_page_size_follows_the_cursor_to_the_same_rows(
    mesh_url: str, domain_urls: dict[str, str]
) -> None:
    recording = Recording()
    with Mesh(mesh_url, token(*SCOPES), domains=domain_urls, transport=recording) as client:
        whole = client.read("sales", "orders", order="order_date.desc")
        recording.urls.clear()
        paged = client.read("sales", "orders", order="order_date.desc", page_size=3)
    pd.testing.assert_frame_equal(paged, whole)
    # an Arrow read of no row for the column types, then 7 JSON pages (3 x 6 + 2)
    assert [dict(u.params).get("limit") for u in recording.urls] == ["0"] + ["3"] * 7
    cursors = [u.params.get("cursor") for u in recording.urls[1:]]
    assert cursors[0] is None and all(cursors[1:]) and len(set(cursors[1:])) == 6


def test_pages_one_by_one(mesh: Mesh) -> None:
    pages = list(mesh.pages("sales", "order-items", page_size=7, exact=True))
    assert [len(p) for p in pages] == [7] * 5 + [6]  # 41 order lines
    lines = pd.concat(pages, ignore_index=True)
    assert lines["item_id"].is_unique and list(lines["item_id"]) == sorted(lines["item_id"])
    pd.testing.assert_frame_equal(lines, mesh.read("sales", "order-items", exact=True))
    assert isinstance(lines["line_total"][0], Decimal)


def test_page_size_with_a_limit_and_an_offset(mesh: Mesh) -> None:
    limited = mesh.read("sales", "orders", page_size=3, limit=5, offset=2)
    assert list(limited["order_id"]) == [3, 4, 5, 6, 7]
    assert mesh.read("sales", "orders", page_size=3, limit=0).columns.size == 8


def test_metric_pages(mesh: Mesh) -> None:
    pages = list(mesh.pages("mesh", "campaign-roi", page_size=3, order="roi_pct.desc"))
    assert [len(p) for p in pages] == [3, 3, 2]
    roi = pd.concat(pages, ignore_index=True)
    pd.testing.assert_frame_equal(roi, mesh.metric("campaign-roi", order="roi_pct.desc"))


# --- the mesh ---------------------------------------------------------------------------


def test_campaign_roi(mesh: Mesh) -> None:
    roi = mesh.metric("campaign-roi", order="roi_pct.desc.nullslast")
    assert len(roi) == 8
    best = roi.iloc[0]
    assert best["campaign_name"] == "Spring Analytics Webinar Series"
    assert (best["spent"], best["attributed_revenue"], best["roi_pct"]) == (
        38212.65,
        88065.00,
        130.46,
    )
    assert roi["roi_pct"].dtype == "float64" and roi["orders"].dtype == "int32"
    assert round(roi["spent"].sum(), 2) == 327000.00


def test_metric_with_a_period(mesh: Mesh) -> None:
    cac = mesh.metric("customer-acquisition-cost", since="2024-06-01")
    row = cac.iloc[0]
    assert row["since"] == pd.Timestamp("2024-06-01") and pd.isna(row["until"])
    assert row["total_marketing_spend"] == 327000.00
    assert row["new_customers"] == 4
    assert row["customer_acquisition_cost"] == 81750.00
    same = mesh.metric("customer-acquisition-cost", since=dt.date(2024, 6, 1), exact=True)
    assert same["customer_acquisition_cost"][0] == Decimal("81750.00")
    journey = mesh.metric("lead-to-customer-journey", since="2024-07-01", until="2024-07-31")
    assert list(journey["customer_name"]) == ["Rheintal Systeme GmbH"]


def test_catalog_metadata_contract_and_quality(mesh: Mesh) -> None:
    catalog = mesh.catalog()
    assert [d["name"] for d in catalog["domains"]] == list(DOMAINS)
    assert {m["name"] for m in catalog["metrics"]} >= {"campaign-roi", "channel-effectiveness"}
    assert [p["name"] for p in mesh.catalog(q="email_key")["domains"][1]["products"]] == ["leads"]
    assert {m["name"] for m in mesh.metrics()} == {m["name"] for m in catalog["metrics"]}

    metadata = mesh.metadata("sales")
    assert metadata["owner"] == "sales-team@company.com"
    assert metadata["tables"]["orders"]["row_count"] == 20
    assert "leads" in [p["name"] for p in mesh.products("marketing")]

    contract = mesh.contract("sales", "orders")
    assert contract["id"] == "urn:datamesh:sales:orders"
    assert contract["apiVersion"] == "v3.2.0"

    overview = mesh.quality()
    assert [d["domain"] for d in overview["domains"]] == list(DOMAINS)


# --- errors -----------------------------------------------------------------------------


def test_a_bad_filter_is_an_error_with_the_problem_detail(mesh: Mesh) -> None:
    for read in (
        lambda: mesh.read("sales", "orders", total_amount="gt.abc"),
        lambda: mesh.read("sales", "orders", total_amount="gt.abc", page_size=5),
        lambda: mesh.pages("sales", "orders", total_amount="gt.abc"),
    ):
        with pytest.raises(DataMeshError) as raised:
            read()
        error = raised.value
        detail = "Parameter 'total_amount' has value 'abc'; column 'total_amount' expects a decimal number."
        assert (error.status, error.title, error.code, error.detail) == (
            400,
            "Invalid value",
            "invalid_value",
            detail,
        )
        assert str(error) == f"400 Invalid value: {detail}"
        assert error.problem["parameter"] == "total_amount" and error.problem["value"] == "abc"


def test_a_missing_scope_is_an_error_naming_it(mesh_url: str, domain_urls: dict[str, str]) -> None:
    with (
        Mesh(mesh_url, token("sales:read"), domains=domain_urls) as client,
        pytest.raises(DataMeshError) as raised,
    ):
        client.read("marketing", "leads")
    error = raised.value
    assert (error.status, error.code) == (403, "insufficient_scope")
    assert (
        error.detail
        == "This request needs the scope 'marketing:read', which the token does not carry."
    )
    assert error.problem["scope"] == "marketing:read"
    assert error.url is not None and error.url.endswith("/marketing/v1/leads")


def test_pii_filters_and_unknown_names_are_errors(mesh: Mesh) -> None:
    with pytest.raises(DataMeshError) as raised:
        mesh.read("marketing", "leads", email="eq.someone@example.com")
    assert (raised.value.status, raised.value.code) == (403, "pii_column")
    with pytest.raises(DataMeshError) as raised:
        mesh.read("sales", "nope")
    assert (raised.value.status, raised.value.code) == (404, "unknown_product")
    with pytest.raises(DataMeshError) as raised:
        mesh.metric("nope")
    assert raised.value.status == 404 and "known: lead-to-customer-journey" in str(raised.value)
    with pytest.raises(DataMeshError, match="Unknown domain 'finance'; known: marketing, sales"):
        mesh.read("finance", "ledger")


def test_a_bad_token_is_a_401(mesh_url: str) -> None:
    with Mesh(mesh_url, "not-a-token") as client, pytest.raises(DataMeshError) as raised:
        client.metric("campaign-roi")
    assert (raised.value.status, raised.value.code) == (401, "unauthorized")
    assert "The token is not valid" in raised.value.detail


def test_an_unreachable_mesh_names_itself() -> None:
    with (
        free_port() as port,
        Mesh(f"http://127.0.0.1:{port}", "t") as client,
        pytest.raises(DataMeshError) as raised,
    ):
        client.metric("campaign-roi")
    assert raised.value.status is None
    assert str(raised.value).startswith(
        f"Could not read http://127.0.0.1:{port}/mesh/v1/campaign-roi: ConnectError"
    )


def test_bad_arguments_are_refused_before_any_request(mesh: Mesh) -> None:
    with pytest.raises(ValueError, match="limit must be a whole number"):
        mesh.read("sales", "orders", limit=-1)
    with pytest.raises(
        TypeError, match=re.escape("give it in the PostgREST form, a string such as 'eq.5'")
    ):
        mesh.read("sales", "orders", order_id=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'select' is not a filter"):
        mesh.read("sales", "orders", filters={"select": "order_id"})
    with pytest.raises(ValueError, match="page_size must be from 1 to 10000"):
        mesh.read("sales", "orders", page_size=10_001)
    with pytest.raises(ValueError, match="is not a product name"):
        mesh.read("sales", "../mesh/v1/catalog")
    with pytest.raises(ValueError, match="since must be an ISO date"):
        mesh.metric("campaign-roi", since="yesterday")


# --- conversions, on answers made here --------------------------------------------------


def _arrow_answer(table: pa.Table) -> httpx.MockTransport:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    body = sink.getvalue()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/cut"):
            return httpx.Response(200, headers={"content-type": ARROW}, stream=_Cut(body))
        return httpx.Response(200, headers={"content-type": ARROW}, content=body)

    return httpx.MockTransport(answer)


ARROW = "application/vnd.apache.arrow.stream"


class _Cut(httpx.SyncByteStream):
    """A body that stops half-way, as a stream whose database went away does."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body[: len(self.body) // 2]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def test_nulls_keep_integers_and_booleans_nullable() -> None:
    table = pa.table(
        {
            "n": pa.array([1, None], pa.int32()),
            "big": pa.array([2**40, None], pa.int64()),
            "flag": pa.array([True, None]),
            "whole": pa.array([3, 4], pa.int64()),
            "money": pa.array([Decimal("1.50"), None], pa.decimal128(14, 2)),
            "day": pa.array([dt.date(2024, 10, 18), None], pa.date32()),
        }
    )
    transport = _arrow_answer(table)
    with Mesh("http://mesh.test", "t", domains={"d": "http://d.test"}, transport=transport) as m:
        frame = m.read("d", "p")
        exact = m.read("d", "p", exact=True)
    dtypes: dict[str, Any] = {c: str(t) for c, t in frame.dtypes.items()}
    assert dtypes == {
        "n": "Int32",
        "big": "Int64",
        "flag": "boolean",
        "whole": "int64",
        "money": "float64",
        "day": "datetime64[us]",
    }
    assert frame["big"][0] == 2**40 and pd.isna(frame["n"][1]) and pd.isna(frame["money"][1])
    assert exact["money"].tolist() == [Decimal("1.50"), None]


def test_a_cut_off_stream_is_an_error() -> None:
    transport = _arrow_answer(pa.table({"n": pa.array(range(1000), pa.int32())}))
    with (
        Mesh("http://mesh.test", "t", domains={"d": "http://d.test"}, transport=transport) as m,
        pytest.raises(DataMeshError, match="the read was cut off"),
    ):
        m.read("d", "cut")

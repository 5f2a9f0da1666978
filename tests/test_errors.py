"""Bad input: the right 4xx status and an RFC 9457 problem+json body that names it.

Each problem has a stable `code`, repeats its `status`, and has a `detail` that names the
offending parameter and value. No answer ever carries a Python traceback.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import orjson
import pytest

from services import domain
from shared.serving.app import create_domain_app
from shared.settings import ServiceSettings
from tests.conftest import app_client

PROBLEM_JSON = "application/problem+json"
NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')


def assert_problem(response: httpx.Response, status: int, code: str, *named: str) -> dict[str, Any]:
    """The response is a problem+json of that status and code whose detail names each of `named`."""
    assert "Traceback" not in response.text
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(f"/{code}")
    assert body["title"]
    assert body["instance"] == response.request.url.path
    for text in named:
        assert text in body["detail"], (text, body["detail"])
    return body


# (case id, path, query parameters, headers, status, code, texts the detail must name)
Case = tuple[str, str, list[tuple[str, str]], dict[str, str], int, str, tuple[str, ...]]
CUS = "/sales/v1/customers"
ORD = "/sales/v1/orders"
CLV = "/sales/v1/customer-lifetime-value"

CASES: list[Case] = [
    ("unknown product", "/sales/v1/customer-lifetime-valu", [], {}, 404, "unknown_product",
        ("customer-lifetime-valu", "customer-lifetime-value")),
    ("unknown product, other domain", "/marketing/v1/customers", [], {}, 404, "unknown_product",
        ("customers", "marketing")),
    ("unknown path", "/sales/nowhere/at/all", [], {}, 404, "not_found", ("/sales/nowhere/at/all",)),
    ("unknown column in select", CLV, [("select", "customer_id,lifetime_vlaue")], {}, 400,
        "unknown_column", ("select", "lifetime_vlaue", "lifetime_value")),
    ("unknown column in order", CLV, [("order", "lifetime_vlaue.desc")], {}, 400,
        "unknown_column", ("order", "lifetime_vlaue")),
    ("empty column in select", CUS, [("select", "customer_id,")], {}, 400, "unknown_column",
        ("select",)),
    ("unsortable column in order", CUS, [("order", "email.desc")], {}, 400, "invalid_value",
        ("order", "email")),
    ("unknown order modifier", CUS, [("order", "customer_id.sideways")], {}, 400, "invalid_value",
        ("order", "sideways")),
    ("unknown operator", CUS, [("customer_id", "approx.3")], {}, 400, "unknown_operator",
        ("customer_id", "approx.3")),
    ("unknown operator after not", CUS, [("customer_id", "not.approx.3")], {}, 400,
        "unknown_operator", ("customer_id", "not.approx.3")),
    ("value without operator", CUS, [("country", "UK")], {}, 400, "unknown_operator",
        ("country", "UK")),
    ("PostgREST operator we do not serve", CUS, [("country", "fts.UK")], {}, 400,
        "unknown_operator", ("country", "fts.UK")),
    ("unknown parameter", CUS, [("colour", "eq.red")], {}, 400, "unknown_parameter", ("colour",)),
    ("logical or is not served", CUS, [("or", "(customer_id.eq.1,customer_id.eq.2)")], {}, 400,
        "unknown_parameter", ("'or'",)),
    ("integer that does not parse", CUS, [("customer_id", "eq.three")], {}, 400, "invalid_value",
        ("customer_id", "three", "integer")),
    ("integer in a list that does not parse", CUS, [("customer_id", "in.(1,two,3)")], {}, 400,
        "invalid_value", ("customer_id", "two")),
    ("decimal that does not parse", ORD, [("total_amount", "gt.12,50")], {}, 400, "invalid_value",
        ("total_amount", "12,50", "decimal")),
    ("decimal that is not a number", ORD, [("total_amount", "lt.NaN")], {}, 400, "invalid_value",
        ("total_amount", "NaN")),
    ("decimal beyond PostgreSQL numeric", ORD, [("total_amount", "gt.1e131072")], {}, 400,
        "invalid_value", ("total_amount", "1e131072", "out of range")),
    ("date that does not parse", ORD, [("order_date", "gte.2024-02-30")], {}, 400,
        "invalid_value", ("order_date", "2024-02-30", "date")),
    ("date on a view", CLV, [("last_order_date", "lt.yesterday")], {}, 400, "invalid_value",
        ("last_order_date", "yesterday")),
    ("timestamp that does not parse", CUS, [("created_at", "gt.2024-05-21T25:00:00Z")], {}, 400,
        "invalid_value", ("created_at", "2024-05-21T25:00:00Z", "timestamp")),
    ("timestamp with an impossible offset", CUS, [("created_at", "gt.2024-05-21T10:00:00+25:00")],
        {}, 400, "invalid_value", ("created_at", "2024-05-21T10:00:00+25:00")),
    ("int32 above the range", CUS, [("customer_id", "eq.2147483648")], {}, 400, "invalid_value",
        ("customer_id", "2147483648", "32-bit")),
    ("int32 below the range", ORD, [("customer_id", "gt.-2147483649")], {}, 400, "invalid_value",
        ("customer_id", "-2147483649", "32-bit")),
    ("text with a NUL character", CUS, [("country", "eq.U\x00K")], {}, 400, "invalid_value",
        ("country", "NUL")),
    ("like pattern with a NUL character", CUS, [("customer_name", "like.*\x00*")], {}, 400,
        "invalid_value", ("customer_name", "NUL")),
    ("in without parentheses", CUS, [("customer_id", "in.1,2")], {}, 400, "invalid_value",
        ("customer_id", "in.1,2")),
    ("in with an unclosed quote", CUS, [("country", 'in.("UK,Germany)')], {}, 400,
        "invalid_value", ("country", '"UK,Germany')),
    ("is with a bad value", CLV, [("avg_order_value", "is.nothing")], {}, 400, "invalid_value",
        ("avg_order_value", "nothing", "null")),
    ("is true on a column that is not boolean", CUS, [("phone", "is.true")], {}, 400,
        "invalid_value", ("phone", "true")),
    ("like on a column that is not text", CUS, [("customer_id", "like.1*")], {}, 400,
        "invalid_value", ("customer_id", "like.1*", "text")),
    ("ilike on a date", ORD, [("order_date", "ilike.2024*")], {}, 400, "invalid_value",
        ("order_date", "ilike.2024*")),
    ("limit over the maximum", CUS, [("limit", "10001")], {}, 400, "limit_out_of_range",
        ("limit", "10001", "10000")),
    ("limit that is not a number", CUS, [("limit", "ten")], {}, 400, "invalid_value",
        ("limit", "ten")),
    ("negative limit", CUS, [("limit", "-1")], {}, 400, "invalid_value", ("limit", "-1")),
    ("fractional limit", CUS, [("limit", "2.5")], {}, 400, "invalid_value", ("limit", "2.5")),
    ("empty limit", CUS, [("limit", "")], {}, 400, "invalid_value", ("limit", "''")),
    ("limit in other digits", CUS, [("limit", "\u00b2")], {}, 400, "invalid_value", ("limit",)),
    ("limit beyond bigint on a stream", CUS, [("limit", "9223372036854775808"),
        ("format", "csv")], {}, 400, "invalid_value", ("limit", "9223372036854775808")),
    ("malformed offset", CUS, [("offset", "first")], {}, 400, "invalid_value", ("offset", "first")),
    ("negative offset", CUS, [("offset", "-5")], {}, 400, "invalid_value", ("offset", "-5")),
    ("offset beyond bigint", CUS, [("offset", "99999999999999999999")], {}, 400, "invalid_value",
        ("offset", "99999999999999999999")),
    ("duplicated limit", CUS, [("limit", "2"), ("limit", "3")], {}, 400, "invalid_value",
        ("limit", "'2'", "'3'")),
    ("duplicated order", CUS, [("order", "customer_id"), ("order", "created_at")], {}, 400,
        "invalid_value", ("order", "created_at")),
    ("malformed cursor", CUS, [("cursor", "not-a-cursor")], {}, 400, "invalid_cursor",
        ("cursor", "not-a-cursor")),
    ("cursor together with offset", CUS, [("cursor", "eyJvIjpbXX0"), ("offset", "5")], {}, 400,
        "invalid_value", ("offset", "'5'", "cursor")),
    ("unsupported Accept", CUS, [], {"Accept": "application/xml"}, 406, "not_acceptable",
        ("application/xml",)),
    ("unsupported Accept with qualities", CUS, [],
        {"Accept": "application/xml, text/html;q=0.9, text/csv;q=0"}, 406, "not_acceptable",
        ("application/xml, text/html;q=0.9, text/csv;q=0",)),
    ("unknown format", CUS, [("format", "xlsx")], {}, 406, "not_acceptable", ("format", "xlsx")),
    ("format meant for one row", CUS, [("format", "object")], {}, 406, "not_acceptable",
        ("format", "object")),
    ("one row asked of a read of many", CUS, [], {"Accept": "application/vnd.pgrst.object+json"},
        406, "not_acceptable", ("more than one row",)),
    ("marketing: score that does not parse", "/marketing/v1/leads",
        [("lead_score", "gte.high")], {}, 400, "invalid_value", ("lead_score", "high")),
    ("row by a key that does not exist", "/sales/v1/customers/999", [], {}, 404, "not_found",
        ("customer_id", "999")),
    ("row by a malformed key", "/sales/v1/orders/first", [], {}, 400, "invalid_value",
        ("order_id", "first")),
    ("row by an out-of-range key", "/sales/v1/orders/4294967296", [], {}, 400, "invalid_value",
        ("order_id", "4294967296")),
    ("row with a filter", "/sales/v1/customers/1", [("limit", "1")], {}, 400,
        "unknown_parameter", ("limit",)),
    ("row with an unknown column", "/sales/v1/customers/1", [("select", "e_mail")], {}, 400,
        "unknown_column", ("select", "e_mail")),
    ("row as CSV", "/sales/v1/customers/1", [], {"Accept": "text/csv"}, 406, "not_acceptable",
        ("csv",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "params", "headers", "status", "code", "named"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_bad_input_is_a_problem_that_names_it(
    sales: httpx.AsyncClient,
    marketing: httpx.AsyncClient,
    path: str,
    params: Any,
    headers: dict[str, str],
    status: int,
    code: str,
    named: tuple[str, ...],
) -> None:
    client = marketing if path.startswith("/marketing") else sales
    response = await client.get(path, params=params, headers=headers)
    assert_problem(response, status, code, *named)


@pytest.mark.parametrize("format_", ["json", "csv", "ndjson", "arrow", "parquet"])
async def test_bad_input_is_a_problem_in_every_format(
    sales: httpx.AsyncClient, format_: str
) -> None:
    """A streaming format checks its input before the first byte is sent."""
    response = await sales.get(ORD, params={"format": format_, "total_amount": "gt.lots"})
    assert_problem(response, 400, "invalid_value", "total_amount", "lots")


async def test_problem_names_the_parameter_and_value_as_fields(sales: httpx.AsyncClient) -> None:
    response = await sales.get(CUS, params={"customer_id": "eq.three"})
    body = assert_problem(response, 400, "invalid_value")
    assert (body["parameter"], body["value"]) == ("customer_id", "three")
    assert body["detail"] == (
        "Parameter 'customer_id' has value 'three'; column 'customer_id' expects an integer."
    )
    response = await sales.get(CUS, params={"limit": "10001"})
    body = assert_problem(response, 400, "limit_out_of_range")
    assert (body["parameter"], body["maximum"]) == ("limit", 10000)


async def test_limit_at_the_maximum_is_accepted(sales: httpx.AsyncClient) -> None:
    response = await sales.get(CUS, params={"limit": "10000"})
    assert response.status_code == 200
    assert len(response.json()) == 15


async def test_int32_bounds_themselves_are_accepted(sales: httpx.AsyncClient) -> None:
    response = await sales.get(CUS, params={"customer_id": "in.(2147483647,-2147483648,1)"})
    assert response.status_code == 200
    assert [r["customer_id"] for r in response.json()] == [1]


async def next_cursor(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> str:
    response = await client.get(path, params=params)
    assert response.status_code == 200
    link = NEXT_LINK.search(response.headers["link"])
    assert link is not None
    cursor = httpx.URL(link.group(1)).params["cursor"]
    assert cursor
    return cursor


def encode(payload: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


async def test_cursor_from_another_order_is_refused(sales: httpx.AsyncClient) -> None:
    cursor = await next_cursor(sales, ORD, {"order": "total_amount.desc", "limit": "3"})
    response = await sales.get(
        ORD, params={"order": "total_amount.desc", "limit": "3", "cursor": cursor}
    )
    assert response.status_code == 200  # the cursor is good for the order it came from
    for order in ("order_date.desc", "total_amount.asc", "total_amount.desc.nullslast"):
        response = await sales.get(ORD, params={"order": order, "limit": "3", "cursor": cursor})
        assert_problem(response, 400, "invalid_cursor", "cursor", cursor)
    response = await sales.get(ORD, params={"limit": "3", "cursor": cursor})
    assert_problem(response, 400, "invalid_cursor", "cursor")


async def test_cursor_of_another_product_is_refused(sales: httpx.AsyncClient) -> None:
    cursor = await next_cursor(sales, CLV, {"order": "lifetime_value.desc", "limit": "2"})
    response = await sales.get(ORD, params={"order": "total_amount.desc", "cursor": cursor})
    assert_problem(response, 400, "invalid_cursor", "cursor", cursor)


@pytest.mark.parametrize(
    "payload",
    [
        {"o": ["order_id.asc.nullslast"], "v": ["first"]},  # not an integer
        {"o": ["order_id.asc.nullslast"], "v": ["4294967296"]},  # not an int32
        {"o": ["order_id.asc.nullslast"], "v": [1]},  # not text
        {"o": ["order_id.asc.nullslast"], "v": []},  # too few values
        {"o": ["order_id.asc.nullslast"]},
        ["order_id.asc.nullslast", "1"],
        "order_id",
    ],
    ids=["value", "range", "type", "length", "missing", "list", "string"],
)
async def test_forged_cursor_is_refused(sales: httpx.AsyncClient, payload: Any) -> None:
    good = encode({"o": ["order_id.asc.nullslast"], "v": ["3"]})
    response = await sales.get(ORD, params={"limit": "2", "cursor": good})
    assert [r["order_id"] for r in response.json()] == [4, 5]
    cursor = encode(payload)
    response = await sales.get(ORD, params={"cursor": cursor})
    assert_problem(response, 400, "invalid_cursor", "cursor", cursor)


@pytest.mark.parametrize("cursor", ["!!!", "e30", "bm90IGpzb24", "AAAA", "e30=="])
async def test_cursor_that_is_not_base64_json_is_refused(
    sales: httpx.AsyncClient, cursor: str
) -> None:
    response = await sales.get(CUS, params={"cursor": cursor})
    assert_problem(response, 400, "invalid_cursor", "cursor", cursor)


async def test_method_other_than_get_is_405_with_allow(sales: httpx.AsyncClient) -> None:
    products = "/sales/v1/products"  # a product its domain does not write (shared.writing.inputs)
    response = await sales.post(products, json={"product_name": "x"})
    body = assert_problem(response, 405, "method_not_allowed", "POST", products)
    assert body["detail"] == f"Method POST is not allowed on '{products}'."
    assert "GET" in response.headers["allow"]
    deleted = await sales.delete(CUS)
    assert_problem(deleted, 405, "method_not_allowed", "DELETE", CUS)


async def test_no_answer_carries_a_traceback(sales: httpx.AsyncClient) -> None:
    """Odd input of every kind, at once: 4xx problems, never a 500 or a stack trace."""
    odd = [
        (ORD, {"total_amount": "gt." + "9" * 5000}),
        (ORD, {"order_date": "eq." + "2024-01-01" * 50}),
        (CUS, {"select": "," * 20}),
        (CUS, {"order": "." * 20}),
        (CUS, {"customer_id": "in.((1,2))"}),
        (CUS, {"customer_id": "in." + "(" * 3}),
        (CUS, {"cursor": "%%%"}),
        (CUS, {"country": "like." + "*" * 100}),
        (CUS, {"created_at": "eq.2024-05-21 10:00:00 00:00"}),
        (CLV, {"avg_order_value": "not.not.eq.1"}),
        ("/sales/v1/%00", {}),
        ("/sales/v1/customers/%00", {}),
    ]
    for path, params in odd:
        response = await sales.get(path, params=params)
        assert "Traceback" not in response.text
        assert response.status_code < 500, (path, params, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == PROBLEM_JSON, (path, params)


async def test_an_order_of_1700_terms_is_a_400_naming_the_repeated_column(
    sales: httpx.AsyncClient,
) -> None:
    order = ",".join(["order_id.desc", *["total_amount.asc"] * 1700])
    body = assert_problem(
        await sales.get(ORD, params={"order": order}), 400, "invalid_value", "total_amount"
    )
    assert (body["parameter"], body["column"]) == ("order", "total_amount")
    assert body["detail"] == "Parameter 'order' names column 'total_amount' more than once."


async def test_links_are_never_built_from_the_host_header(
    sales: httpx.AsyncClient, database_urls: dict[str, str], settings: ServiceSettings
) -> None:
    params = {"limit": "2", "order": "order_id"}
    response = await sales.get(ORD, params=params, headers={"Host": "evil.example"})
    (link,) = NEXT_LINK.findall(response.headers["link"])
    assert link.startswith(f"{ORD}?limit=2&order=order_id&cursor=")
    assert "evil" not in response.headers["link"]
    public = settings.model_copy(update={"public_url": "https://data.example.com"})
    app = create_domain_app(domain("sales"), database_url=database_urls["sales"], settings=public)
    async with app_client(app) as client:
        response = await client.get(ORD, params=params, headers={"Host": "evil.example"})
        (link,) = NEXT_LINK.findall(response.headers["link"])
        assert link.startswith(f"https://data.example.com{ORD}?limit=2&order=order_id&cursor=")
        contract = await client.get("/sales/v1/products/orders/contract?format=json")
        assert "evil" not in contract.text
        assert contract.json()["servers"][0]["location"] == f"https://data.example.com{ORD}"


def test_a_public_url_must_be_a_base_url() -> None:
    with pytest.raises(
        ValueError, match=re.escape("is not a base URL like https://data.example.com")
    ):
        ServiceSettings(public_url="data.example.com/path?x=1")

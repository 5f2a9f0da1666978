"""A stand-in for the domains' lake output port in the tests of the Spark engine: every product
of every domain read over HTTP as Arrow, as the mesh reads it (the mesh's token: read scopes,
PII masked, `email_key` as it joins on), written with pyarrow in the lake's layout.

    <lake>/<domain>/<product>/v<version>/snapshot=<id>/month=YYYY-MM/part-0.parquet
        (hive partitions by the product's first date column; else part-0.parquet)
    <lake>/<domain>/<product>/v<version>/snapshot=<id>/_manifest.json
    <lake>/<domain>/<product>/v<version>/_latest          {"snapshot": "<id>"}, written last
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services import DOMAINS
from tests.conftest import token

# what the mesh's own token carries: every domain's read scope, no pii
MESH_TOKEN = {"Authorization": f"Bearer {token(*(f'{d}:read' for d in DOMAINS), subject='mesh')}"}


def snapshot_id(now: dt.datetime | None = None) -> str:
    """A new snapshot's id: its UTC time and a random suffix."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def _write(folder: Path, table: pa.Table, date_column: str | None) -> list[str]:
    """The table's Parquet files under `folder`; the partitions written."""
    if date_column is None:
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-0.parquet")
        return []
    months = pc.strftime(table[date_column], format="%Y-%m")
    partitions = []
    for month in sorted(m for m in set(months.to_pylist()) if m is not None):
        part = folder / f"month={month}"
        part.mkdir(parents=True)
        pq.write_table(table.filter(pc.equal(months, month)), part / "part-0.parquet")
        partitions.append(f"month={month}")
    undated = table.filter(pc.is_null(months))
    if undated.num_rows:
        part = folder / "month=__HIVE_DEFAULT_PARTITION__"
        part.mkdir(parents=True)
        pq.write_table(undated, part / "part-0.parquet")
        partitions.append(part.name)
    return partitions


def export(
    domain_urls: dict[str, str],
    lake: Path,
    *,
    skip: tuple[str, ...] = (),
    created_at: dt.datetime | None = None,
) -> dict[str, str]:
    """Every product of every domain as a new snapshot in the lake (but the `domain/product`s
    in `skip`); the snapshot id of each `domain/product`."""
    created = created_at or dt.datetime.now(dt.UTC)
    written = {}
    with httpx.Client(headers=MESH_TOKEN, timeout=60) as client:
        for domain, base in domain_urls.items():
            listing = client.get(f"{base}/{domain}/v1")
            listing.raise_for_status()
            for entry in listing.json():
                lineage = f"{domain}/{entry['name']}"
                if lineage in skip:
                    continue
                response = client.get(f"{base}{entry['path']}", params={"format": "arrow"})
                response.raise_for_status()
                table = pa.ipc.open_stream(response.content).read_all()
                dates = [c["name"] for c in entry["columns"] if c["type"] == "date"]
                stamps = [c["name"] for c in entry["columns"] if c["type"] == "timestamp"]
                product = lake / domain / entry["name"] / f"v{entry['version']}"
                snapshot = snapshot_id(created)
                folder = product / f"snapshot={snapshot}"
                partitions = _write(folder, table, dates[0] if dates else None)
                manifest: dict[str, Any] = {
                    "product": entry["name"],
                    "domain": domain,
                    "product_version": entry["version"],
                    "contract_version": f"{entry['version']}.0.0",
                    "snapshot": snapshot,
                    "created_at": created.isoformat(),
                    "row_count": table.num_rows,
                    "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
                    "partitions": partitions,
                    "high_water_mark": _newest(table, stamps),
                }
                (folder / "_manifest.json").write_text(json.dumps(manifest, indent=2))
                (product / "_latest").write_text(json.dumps({"snapshot": snapshot}))
                written[lineage] = snapshot
    return written


def _newest(table: pa.Table, columns: list[str]) -> str | None:
    values = [pc.max(table[c]).as_py() for c in columns]
    present = [v for v in values if v is not None]
    return max(present).isoformat() if present else None

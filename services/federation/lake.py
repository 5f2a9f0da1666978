"""The domains' lake output port as the mesh reads it: the latest complete snapshot of a
product, found from its pointer, and its manifest.

The layout is the exporter's (shared/publishing/lake.py, docs/lake.md):
`<lake>/<domain>/<product>/v<version>/snapshot=<id>/` holds a snapshot's Parquet files and its
`_manifest.json`; `<lake>/<domain>/<product>/v<version>/_latest` is a small JSON document naming
the latest complete snapshot (`{"snapshot_id": "<id>", ...}`), written after the snapshot
itself, so a reader that follows it never sees a half-written one. The lake is a local path or
`s3://bucket/prefix`, opened as the exporter opens it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from shared.errors import ServiceUnavailable
from shared.publishing.lake import MANIFEST, POINTER, SNAPSHOT_ID, SNAPSHOT_PREFIX
from shared.publishing.lake import Lake as LakeStore

_VERSION = re.compile(r"^v([0-9]{1,6})$")


class NoSnapshot(ServiceUnavailable):
    code = "no_snapshot"
    title = "No snapshot"


@dataclass(frozen=True)
class Snapshot:
    """One complete snapshot of a product in the lake."""

    domain: str
    product: str
    version: int
    id: str
    url: str  # the snapshot's folder, as an engine reads it (a path, or s3a://bucket/key)
    manifest: dict[str, Any]

    @property
    def lineage(self) -> str:
        """`domain/product/v<version>=<id>`, as the DataMesh-Snapshots header names it."""
        return f"{self.domain}/{self.product}/v{self.version}={self.id}"

    @property
    def created_at(self) -> dt.datetime | None:
        """When the snapshot was taken (its manifest's created_at), if it says."""
        value = self.manifest.get("created_at")
        if not isinstance(value, str):
            return None
        try:
            created = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return created if created.tzinfo else created.replace(tzinfo=dt.UTC)

    def age_seconds(self, now: dt.datetime | None = None) -> int | None:
        """How old the snapshot is, in whole seconds (None if its manifest does not say)."""
        created = self.created_at
        if created is None:
            return None
        now = now or dt.datetime.now(dt.UTC)
        return max(0, int((now - created).total_seconds()))

    def describe(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """The snapshot in the metric catalogue's lineage."""
        return {
            "input": f"{self.domain}/{self.product}",
            "version": self.version,
            "snapshot": self.id,
            "created_at": self.manifest.get("created_at"),
            "age_seconds": self.age_seconds(now),
            "row_count": self.manifest.get("row_count"),
            "high_water_mark": self.manifest.get("high_water_mark"),
        }


class Lake:
    """A lake opened for reading: a local path or s3://bucket/prefix (`s3_endpoint` for an
    S3-compatible store; credentials from AWS's standard variables). pyarrow's file systems read
    the pointers and manifests; the engine reads the Parquet files itself."""

    def __init__(self, url: str, *, s3_endpoint: str | None = None):
        if "://" in url and not url.startswith(("file://", "s3://", "s3a://")):
            raise ValueError(f"a lake is a local path or s3://bucket/prefix, not '{url}'")
        if url.startswith("s3a://"):
            url = "s3://" + url.removeprefix("s3a://")
        self.store = LakeStore.at(url, s3_endpoint=s3_endpoint)
        self.url = self.store.url
        self.root = self.store.root
        # how the engine names a snapshot's folder: a local path, or s3a://bucket/key (Hadoop's)
        self._engine_root = self.root if self.store.local else f"s3a://{self.root}"

    def _versions(self, domain: str, product: str, folder: str) -> list[int]:
        try:
            entries = self.store.entries(folder)
        except OSError as exc:  # not a missing folder: the lake itself cannot be read
            raise self._none(domain, product, f"the lake cannot be listed ({exc})") from None
        found = [_VERSION.match(e.base_name) for e in entries if e.type == pafs.FileType.Directory]
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def latest(self, domain: str, product: str) -> Snapshot:
        """The latest complete snapshot of the product: of its highest version that has one
        (the version its domain publishes now; versions only go up). NoSnapshot (503) naming
        the product if there is none, or its pointer or manifest cannot be read."""
        folder = f"{self.root}/{domain}/{product}"
        for version in self._versions(domain, product, folder):
            pointer = f"v{version}/{POINTER}"
            try:
                kind = self.store.filesystem.get_file_info(f"{folder}/{pointer}").type
            except OSError as exc:
                raise self._none(domain, product, f"the lake cannot be read ({exc})") from None
            if kind != pafs.FileType.File:
                continue
            try:
                named = self.store.read_json(f"{folder}/{pointer}")
            except OSError as exc:
                raise self._none(domain, product, f"its pointer {pointer} ({exc})") from None
            snapshot_id = named.get("snapshot_id") if isinstance(named, dict) else None
            if not isinstance(snapshot_id, str) or not SNAPSHOT_ID.fullmatch(snapshot_id):
                raise self._none(domain, product, f"its pointer {pointer} names no snapshot")
            relative = f"{domain}/{product}/v{version}/{SNAPSHOT_PREFIX}{snapshot_id}"
            try:
                manifest = self.store.read_json(f"{self.root}/{relative}/{MANIFEST}")
            except OSError:
                manifest = None
            if not isinstance(manifest, dict):
                raise self._none(
                    domain, product, f"its snapshot {snapshot_id} has no readable {MANIFEST}"
                )
            return Snapshot(
                domain, product, version, snapshot_id, f"{self._engine_root}/{relative}", manifest
            )
        raise self._none(domain, product, f"it has no complete snapshot (no v<N>/{POINTER})")

    @staticmethod
    def _none(domain: str, product: str, why: str) -> NoSnapshot:
        return NoSnapshot(
            f"The lake holds no snapshot of {domain}/{product} to read: {why}. Export it "
            "(`datamesh lake export`), or serve the mesh with the duckdb engine.",
            headers={"Retry-After": "60"},
            domain=domain,
            product=product,
        )

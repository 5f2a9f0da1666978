"""Output formats: negotiation by Accept or ?format=, and streaming encoders."""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shared.declarations.products import DATED, Column
from shared.errors import NotAcceptable
from shared.reading.values import arrow_type

if TYPE_CHECKING:
    from shared.reading.query import ReadQuery


class Format(StrEnum):
    """A representation of a product's rows."""

    JSON = "json"
    CSV = "csv"
    NDJSON = "ndjson"
    ARROW = "arrow"
    PARQUET = "parquet"
    OBJECT = "object"  # one row as a JSON object (PostgREST's vnd.pgrst.object+json)


MEDIA_TYPES: dict[Format, str] = {
    Format.JSON: "application/json",
    Format.CSV: "text/csv; charset=utf-8",
    Format.NDJSON: "application/x-ndjson",
    Format.ARROW: "application/vnd.apache.arrow.stream",
    Format.PARQUET: "application/vnd.apache.parquet",
    Format.OBJECT: "application/vnd.pgrst.object+json",
}

_ACCEPTED: dict[str, Format] = {
    "application/json": Format.JSON,
    "application/*": Format.JSON,
    "*/*": Format.JSON,
    "text/csv": Format.CSV,
    "text/*": Format.CSV,
    "application/x-ndjson": Format.NDJSON,
    "application/ndjson": Format.NDJSON,
    "application/jsonl": Format.NDJSON,
    "application/vnd.apache.arrow.stream": Format.ARROW,
    "application/vnd.apache.parquet": Format.PARQUET,
    "application/x-parquet": Format.PARQUET,
    "application/vnd.pgrst.object+json": Format.OBJECT,
    "application/vnd.pgrst.object": Format.OBJECT,
}

STREAMING = (Format.CSV, Format.NDJSON, Format.ARROW, Format.PARQUET)


def accepted_media(accept: str) -> list[str]:
    """The media types of an Accept header, most preferred first (q=0 left out)."""
    offers: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        offers.append((quality, -position, media.lower()))
    return [media for quality, _, media in sorted(offers, reverse=True) if quality > 0]


def negotiate(format_parameter: str | None, accept: str | None) -> Format:
    """The format asked for by ?format= (first) or by the Accept header, else JSON."""
    if format_parameter is not None:
        try:
            chosen = Format(format_parameter.lower())
        except ValueError:
            chosen = None
        if chosen is None or chosen is Format.OBJECT:
            raise NotAcceptable(
                f"Parameter 'format' has value '{format_parameter}'; supported: "
                "json, csv, ndjson, arrow, parquet.",
                parameter="format",
            )
        return chosen
    if not accept:
        return Format.JSON
    for media in accepted_media(accept):
        if media in _ACCEPTED:
            return _ACCEPTED[media]
    raise NotAcceptable(
        f"None of the media types in Accept '{accept}' is available; supported: "
        + ", ".join(sorted({m.split(";")[0] for m in MEDIA_TYPES.values()})),
        accept=accept,
    )


# told the number of rows a stream sent, as they go (the access log and the metrics count them)
Counted = Callable[[int], None] | None


@dataclass(frozen=True)
class Page:
    """One JSON page: rows as JSON texts, the keyset of the last row if more follow, the
    total (when a count was asked for) and the position of the first row."""

    rows: list[str]
    last: tuple[Any, ...] | None
    total: int | None
    start: int


class RowSource(Protocol):
    """Where a product's rows come from: a domain database, or a table the mesh computed."""

    async def page(self, query: ReadQuery, size: int, count_mode: str | None) -> Page: ...

    async def count(self, query: ReadQuery, count_mode: str) -> int: ...

    def stream(
        self, query: ReadQuery, fmt: Format, counted: Counted = None
    ) -> AsyncGenerator[bytes, None]: ...


class _Chunks:
    """A write-only file object that hands what was written to the response, chunk by chunk."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    """The Arrow schema of the selected columns, with their descriptions as field metadata.

    Date and timestamp fields are nullable whatever the column declares: a row holding
    PostgreSQL's `infinity` or `-infinity` there (the columns' constraints refuse them, but a
    row may predate them) answers null in Arrow and Parquet."""
    return pa.schema(
        [
            pa.field(
                c.name,
                arrow_type(c),
                nullable=c.nullable or c.type in DATED,
                metadata={"description": c.description, "classification": str(c.classification)},
            )
            for c in columns
        ]
    )


def _read_csv(schema: pa.Schema, block: bytes, null_values: list[str]) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(block),
        read_options=pacsv.ReadOptions(column_names=schema.names),
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            null_values=null_values,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )


def csv_to_arrow(schema: pa.Schema, block: bytes) -> list[pa.RecordBatch]:
    """Rows of PostgreSQL's COPY CSV (no header; columns in schema order; timestamps as ISO
    8601 text) as record batches of the schema, parsed by Arrow's CSV reader: NULL is an
    unquoted empty field, a quoted empty field the empty string, booleans t/f.

    A block that does not parse because a date or timestamp is infinite (or of a year Arrow
    cannot hold: beyond 9999, or BC) is read again with those values as null, in the date and
    timestamp columns only."""
    try:
        table = _read_csv(schema, block, [""])
    except pa.ArrowInvalid:
        dated = [f for f in schema if pa.types.is_date(f.type) or pa.types.is_timestamp(f.type)]
        if not dated:
            raise
        # the dated columns as text first, their infinities as null, then the declared types
        as_text = pa.schema([f.with_type(pa.string()) if f in dated else f for f in schema])
        table = _read_csv(as_text, block, [""])
        for field in dated:
            index = table.schema.get_field_index(field.name)
            values = table.column(index)
            # what Arrow cannot hold either: years beyond 9999 or before Christ
            held = pc.and_(
                pc.match_substring_regex(values, r"^\d{4}-"), pc.invert(pc.ends_with(values, " BC"))
            )
            finite = pc.if_else(held, values, None)
            table = table.set_column(index, field, pc.cast(finite, field.type))
    return [
        pa.RecordBatch.from_arrays(batch.columns, schema=schema) for batch in table.to_batches()
    ]


async def encode_arrow(
    schema: pa.Schema, batches: AsyncIterator[pa.RecordBatch]
) -> AsyncGenerator[bytes, None]:
    """An Arrow IPC stream of the schema, one record batch after the other as they come."""
    sink = _Chunks()
    with pa.ipc.new_stream(sink, schema) as writer:
        yield sink.take()
        async for batch in batches:
            writer.write_batch(batch)
            yield sink.take()
    yield sink.take()


async def encode_parquet(
    schema: pa.Schema, batches: AsyncIterator[pa.RecordBatch]
) -> AsyncGenerator[bytes, None]:
    """A Parquet file of the schema, one row group per record batch, written as it is read."""
    sink = _Chunks()
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        async for batch in batches:
            writer.write_batch(batch)
            yield sink.take()
    yield sink.take()


async def encode_ndjson(lines: AsyncIterator[Sequence[str]]) -> AsyncGenerator[bytes, None]:
    """Newline-delimited JSON from rows already rendered as JSON text by PostgreSQL."""
    async for batch in lines:
        yield ("\n".join(batch) + "\n").encode()


def encode_json_array(lines: Sequence[str]) -> bytes:
    """A bare JSON array from rows already rendered as JSON text by PostgreSQL."""
    return ("[" + ",".join(lines) + "]").encode()

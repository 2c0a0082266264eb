"""The funnel report written out: CSV or Parquet, to a local file (atomically) or to S3
(streamed, multipart): what `funnel export` and the Dagster daily report write. The API streams
the same CSV chunks (`report.query.csv_chunks`) over HTTP instead."""

from __future__ import annotations

import csv
import io
import itertools
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from funnel_ingest.report.query import ReportFilter
    from funnel_ingest.settings import Settings


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for boto3 and pyarrow). A read fills
    the whole buffer it is given (short only at the end): readers that allocate a buffer per
    read keep buffers of the size they asked for, not one per small chunk."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        filled = 0
        while filled < len(view):
            if self._pos == len(self._buf):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buf, self._pos = chunk, 0
                continue
            n = min(len(view) - filled, len(self._buf) - self._pos)
            view[filled:filled + n] = self._buf[self._pos:self._pos + n]
            filled += n
            self._pos += n
        return filled


def arrow_schema():
    """The report's columns as Parquet types (dates, integer Rupiah, UTC timestamps)."""
    import pyarrow as pa

    from funnel_ingest.report.query import REPORT_COLUMNS

    types = {"leads_date": pa.date32(), "booking_date": pa.date32(),
             "transaction_date": pa.date32(), "requested_date": pa.date32(),
             "transaction_value": pa.int64(), "transaction_total": pa.int64(),
             "cycle": pa.int32(), "transactions": pa.int32(),
             "lead_at": pa.timestamp("us", tz="UTC"), "booking_at": pa.timestamp("us", tz="UTC"),
             "transaction_at": pa.timestamp("us", tz="UTC")}
    return pa.schema([(c, types.get(c, pa.string())) for c in REPORT_COLUMNS])


def write_parquet(chunks: Iterator[bytes], sink: str | Path) -> None:
    """The report's CSV stream (`report.csv_chunks`) as a Parquet file, batch by batch."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = arrow_schema()
    reader = pacsv.open_csv(
        ChunkReader(chunks), read_options=pacsv.ReadOptions(block_size=4 << 20),
        convert_options=pacsv.ConvertOptions(
            column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False))
    with pq.ParquetWriter(str(sink), schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)


def s3_target(output: str) -> tuple[str, str] | None:
    if not output.startswith("s3://"):
        return None
    bucket, _, key = output[5:].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise ValueError(f"{output}: an S3 destination is s3://BUCKET/KEY")
    return bucket, key


class _Records:
    """Counts the CSV records of a byte stream as it passes, keeping the first few to parse.

    A newline ends a record only outside quotes, and a quoted value doubles its own quotes, so
    a newline ends a record exactly when an even number of quotes came before it: a label that
    holds a line break is one record, not two."""

    def __init__(self, keep: int = 0) -> None:
        self.records = 0
        self.bytes = 0
        self._keep = keep
        self._quoted = False
        self._head = bytearray()

    def feed(self, chunk: bytes) -> int:
        """Take the next chunk; return how many records it completed."""
        self.bytes += len(chunk)
        if self.records < self._keep:
            self._head += chunk
        if not self._quoted and b'"' not in chunk:
            done = chunk.count(b"\n")
        else:
            done, start = 0, 0
            while (end := chunk.find(b"\n", start)) != -1:
                self._quoted ^= chunk.count(b'"', start, end) % 2 == 1
                done += not self._quoted
                start = end + 1
            self._quoted ^= chunk.count(b'"', start) % 2 == 1
        self.records += done
        return done

    def head(self) -> list[list[str]]:
        """The first complete records (the header first), parsed: at most `keep`."""
        rows = csv.reader(io.StringIO(self._head.decode(errors="replace"), newline=""))
        return list(itertools.islice(rows, min(self._keep, self.records)))


@dataclass(frozen=True)
class Exported:
    """What `export` wrote: data rows (the header not counted), the leads the filter matched
    in the same snapshot, bytes (CSV only; 0 for Parquet), and the header + first rows as
    parsed (when asked for with `head`)."""

    rows: int
    expected: int
    bytes: int
    head: list[list[str]]


def _counted(chunks: Iterator[bytes], records: _Records,
             on_rows: Callable[[int], None] | None) -> Iterator[bytes]:
    """The chunks unchanged, counted; `on_rows` gets the data rows each chunk completes."""
    header = True
    for chunk in chunks:
        done = records.feed(chunk)
        if header and done:
            done -= 1
            header = False
        if done and on_rows is not None:
            on_rows(done)
        yield chunk


def export(settings: Settings, filt: ReportFilter, output: str, fmt: str, *,
           spreadsheet_safe: bool | None = None,
           on_total: Callable[[int], None] | None = None,
           on_rows: Callable[[int], None] | None = None, head: int = 0) -> Exported:
    """Write the report of `filt` to `output` (a path or s3://bucket/key) as `fmt`.

    The count and the rows are read in one snapshot (a repeatable-read, read-only
    transaction), so `Exported.expected` is the number of leads the filter matched at that
    moment, however the drains write meanwhile, and `Exported.rows` (what was written) must
    equal it. A local file appears only complete (written beside, then renamed). A CSV
    neutralizes formula-like cells unless `spreadsheet_safe` is False (default:
    CSV_SPREADSHEET_SAFE); Parquet always holds the exact values (typed, not for Excel).
    `on_total` gets the row count before writing starts, `on_rows` each batch of rows written
    (a progress bar); `head` asks for the header and that many first rows, parsed."""
    safe = (settings.csv_spreadsheet_safe if spreadsheet_safe is None else spreadsheet_safe
            ) and fmt == "csv"
    import psycopg

    from funnel_ingest.report import query as report

    target = s3_target(output)
    with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
        report.configure_session(conn)
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            expected = report.count_rows(conn, filt)
            if on_total is not None:
                on_total(expected)
            records = _Records(keep=head + 1 if head else 0)
            chunks = _counted(report.csv_chunks(conn, filt, spreadsheet_safe=safe),
                              records, on_rows)
            if target is None:
                _write_file(chunks, Path(output), fmt)
            else:
                _upload(settings, chunks, *target, fmt)
    return Exported(rows=max(0, records.records - 1), expected=expected,
                    bytes=records.bytes if fmt == "csv" else 0, head=records.head())


def _write_file(chunks: Iterator[bytes], path: Path, fmt: str) -> None:
    part = path.with_name(f".{path.name}.part")
    try:
        if fmt == "parquet":
            write_parquet(chunks, part)
        else:
            with part.open("wb") as f:
                for chunk in chunks:
                    f.write(chunk)
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)


def _upload(settings: Settings, chunks: Iterator[bytes], bucket: str, key: str,
            fmt: str) -> None:
    """Streamed to S3: a CSV as a multipart upload as it is read, Parquet through a
    temporary file (its footer is written last)."""
    from boto3.s3.transfer import TransferConfig

    from funnel_ingest import s3

    client = s3.client(settings)
    config = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=4)
    if fmt == "csv":
        client.upload_fileobj(ChunkReader(chunks), bucket, key, Config=config,
                              ExtraArgs={"ContentType": "text/csv"})
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "report.parquet"
        write_parquet(chunks, local)
        client.upload_file(str(local), bucket, key, Config=config,
                           ExtraArgs={"ContentType": "application/vnd.apache.parquet"})

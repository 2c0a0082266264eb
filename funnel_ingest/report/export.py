"""The funnel report written out: CSV or Parquet, to a local file (atomically) or to S3
(streamed, multipart): what `funnel export` writes. The API streams the same CSV chunks
(`report.query.csv_chunks`) over HTTP instead."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
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


def _counted(chunks: Iterator[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    """The chunks unchanged, reporting the rows (lines) each one completes."""
    header = True
    for chunk in chunks:
        lines = chunk.count(b"\n")
        if header and lines:
            lines -= 1
            header = False
        if lines:
            advance(lines)
        yield chunk


def export(settings: Settings, filt: ReportFilter, output: str, fmt: str, *,
           spreadsheet_safe: bool | None = None,
           on_total: Callable[[int], None] | None = None,
           on_rows: Callable[[int], None] | None = None) -> int:
    """Write the report of `filt` to `output` (a path or s3://bucket/key) as `fmt`; returns
    the number of rows. A local file appears only complete (written beside, then renamed).
    A CSV neutralizes formula-like cells unless `spreadsheet_safe` is False (default:
    CSV_SPREADSHEET_SAFE); Parquet always holds the exact values (typed, not for Excel).
    `on_total` gets the row count before writing starts, `on_rows` each batch of rows written
    (a progress bar)."""
    safe = (settings.csv_spreadsheet_safe if spreadsheet_safe is None else spreadsheet_safe
            ) and fmt == "csv"
    import psycopg

    from funnel_ingest import s3
    from funnel_ingest.report import query as report

    target = s3_target(output)
    with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
        report.configure_session(conn)
        if on_total is not None:
            on_total(report.count_rows(conn, filt))
        rows = 0

        def advance(n: int) -> None:
            nonlocal rows
            rows += n
            if on_rows is not None:
                on_rows(n)

        chunks = _counted(report.csv_chunks(conn, filt.start, filt.end, filt.channels,
                                            filt.campaign, spreadsheet_safe=safe), advance)
        if target is None:
            path = Path(output)
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
            return rows
        from boto3.s3.transfer import TransferConfig

        bucket, key = target
        client = s3.client(settings)
        config = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=4)
        if fmt == "csv":
            client.upload_fileobj(ChunkReader(chunks), bucket, key, Config=config,
                                  ExtraArgs={"ContentType": "text/csv"})
        else:
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "report.parquet"
                write_parquet(chunks, local)
                client.upload_file(str(local), bucket, key, Config=config,
                                   ExtraArgs={"ContentType": "application/vnd.apache.parquet"})
        return rows

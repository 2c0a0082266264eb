"""The export's record counter: CSV records, not lines, however the stream is cut."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from funnel_ingest.report.export import _Records

cells = st.text(alphabet=st.sampled_from(list('ab,"\n\r =+x')), max_size=8)


def _csv(rows: list[list[str]]) -> bytes:
    """As Postgres' COPY writes it: any value with a comma, quote, CR or LF quoted."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)  # CR as a terminator: CRs quoted
    return out.getvalue().encode()


@given(rows=st.lists(st.lists(cells, min_size=1, max_size=4), min_size=1, max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_records_are_counted_and_parsed_exactly_wherever_the_chunks_end(rows, cuts):
    data = _csv(rows)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    records = _Records(keep=5)
    done = sum(records.feed(data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))
    parsed = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert done == records.records == len(parsed)
    assert records.bytes == len(data)
    assert records.head() == parsed[:5]


def test_a_line_break_inside_a_quoted_label_is_one_record():
    records = _Records(keep=3)
    records.feed(b'channel,value\n"tik\ntok",1\n"say ""hi""\r\n",2\n')
    assert records.records == 3
    assert records.head() == [["channel", "value"], ["tik\ntok", "1"], ['say "hi"\r\n', "2"]]

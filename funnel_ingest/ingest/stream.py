"""Appending normalized items to the Redis Streams (one atomic script call per request)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

import orjson
import redis
import redis.asyncio as aioredis

from funnel_ingest.messages import ParseResult, text
from funnel_ingest.settings import Settings

ROOM_PREFIX = "funnel:room:"  # + "<source>:<room id>" -> the room's customer key
SEEN_PREFIX = "funnel:seen:"
_SCRIPT = resources.files(__package__).joinpath("append.lua").read_text()


@dataclass(frozen=True)
class AppendOutcome:
    appended: int
    duplicates: int
    pending_room: int


def script_args(settings: Settings, result: ParseResult, *, force: bool = False) -> list[str | int | bytes]:
    """The append script's arguments for `result` (see append.lua)."""
    s = settings
    args: list[str | int | bytes] = [
        s.stream_shards, s.stream_prefix, s.dedupe_ttl_seconds, s.stream_maxlen,
        s.status_stream, s.deadletter_stream, ROOM_PREFIX, SEEN_PREFIX, "1" if force else "0",
        s.room_ttl_seconds,
    ]
    for m in result.messages:
        fields = m.to_fields()
        customer = fields.pop("customer_key", "")
        room = f"{m.source}:{m.room_id}" if m.room_id else ""
        args += ["m", m.idempotency_key(), room, customer, m.direction, orjson.dumps(fields)]
    for st in result.statuses:
        args += ["s", st.idempotency_key(), "", "", "", orjson.dumps(st.to_fields())]
    for d in result.dead_letters:
        args += ["d", "", "", "", "", orjson.dumps(d.to_fields())]
    return args


class StreamWriter:
    """Writes a request's messages, statuses and dead letters in one atomic Lua call.

    The script marks each item's idempotency key and appends it in the same step, so a failed
    request leaves nothing behind and its redelivery is appended once; a redelivery of an item
    already appended is counted as a duplicate and not appended again.
    """

    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._script = client.register_script(_SCRIPT)

    async def append(self, result: ParseResult) -> AppendOutcome:
        appended, duplicates, pending = await self._script(
            keys=[], args=script_args(self._settings, result))
        return AppendOutcome(int(appended), int(duplicates), int(pending))


def append_sync(client: redis.Redis, settings: Settings, result: ParseResult, *,
                force: bool = False) -> AppendOutcome:
    """The same atomic append from synchronous code (`funnel replay`); `force` appends items
    whose dedupe mark exists (they were found neither stored nor on a stream)."""
    script = client.register_script(_SCRIPT)
    appended, duplicates, pending = script(keys=[], args=script_args(settings, result, force=force))
    return AppendOutcome(int(appended), int(duplicates), int(pending))


# --------------------------------------------------------------------------- ids and ranges


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A stream id as (milliseconds, sequence), for comparisons."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(stream_id: str) -> str:
    """The smallest id after `stream_id` (an XTRIM MINID that keeps nothing at or below it)."""
    ms, seq = stream_id_key(stream_id)
    return f"{ms}-{seq + 1}"


def newest_id(r: redis.Redis, stream: str) -> str | None:
    last = r.xrevrange(stream, count=1)
    return text(last[0][0]) if last else None


def oldest_id(r: redis.Redis, stream: str) -> str | None:
    first = r.xrange(stream, count=1)
    return text(first[0][0]) if first else None


def entry_age_seconds(stream_id: str | bytes, now: float | None = None) -> float:
    """How long ago an entry was appended (its id holds the append time in milliseconds)."""
    now = time.time() if now is None else now
    return max(0.0, now - stream_id_key(text(stream_id))[0] / 1000)


def oldest_age_seconds(r: redis.Redis, stream: str) -> float:
    """Age of the stream's oldest entry (entries leave only once processed), 0 when empty."""
    first = oldest_id(r, stream)
    return entry_age_seconds(first) if first else 0.0

"""HTTP/1.1 written by hand on raw connections: what a hostile or broken sender does (headers
that never end, bodies trickled a byte at a time, requests cut short), which no HTTP client
library will send. Used by the edge tests and `bench/hostile.py`."""

from __future__ import annotations

import asyncio


def post_head(path: str, headers: dict[str, str]) -> bytes:
    """The request line and headers of a POST to `path` on loopback, blank line included."""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


async def send(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Write `data`; False when the server has closed or reset the connection."""
    try:
        writer.write(data)
        await writer.drain()
        return True
    except (ConnectionError, OSError):
        return False

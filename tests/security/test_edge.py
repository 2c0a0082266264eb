"""The HTTP edge under hostile senders, on the server `funnel api` really runs (granian, one
worker, a child process) and through the reverse proxy the compose file ships (nginx, when the
`nginx` binary is installed): headers and bodies trickled, oversized or never finished, too
many bodies at once. Each test fails on a server without the limit it checks (uvicorn holds a
trickled header forever and buffers a 50 MB header line).

The limits are set small here (2 s deadlines, 4 bodies at once) so that each test takes
seconds; the deadlines checked are the configured ones plus slack for a loaded machine."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from funnel_ingest.local.processes import (
    api_worker_pids,
    free_port,
    rss_mb,
    start_api,
    stop_process_group,
)
from funnel_ingest.simulate.raw_http import post_head, send
from tests.support import SECRETS, payload, stream_lengths

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
MAX_READING = 4
SLACK = 4.0  # a loaded two-core machine; the attacks below run 3-20 times longer than this


def _env(stack_env: dict[str, str], sec_settings) -> dict[str, str]:
    return {**stack_env, **{k.upper(): v for k, v in SECRETS.items()},
            "RAW_BUCKET": sec_settings.raw_bucket, "REPORTS_BUCKET": sec_settings.reports_bucket,
            "HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            "HTTP_MAX_READING": str(MAX_READING), "HTTP_RETRY_AFTER_SECONDS": "3",
            "HTTP_MAX_HEADER_BYTES": "16384", "LOG_LEVEL": "WARNING"}


@pytest.fixture(scope="module")
def edge_api(stack_env, sec_settings, tmp_path_factory
             ) -> Iterator[tuple[subprocess.Popen, int]]:
    """`funnel api` (one worker) with small limits; yields its process and port."""
    port = free_port()
    log = tmp_path_factory.mktemp("edge") / "api.log"
    proc = start_api(_env(stack_env, sec_settings), port, log, workers=1)
    try:
        yield proc, port
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="module")
def edge(edge_api) -> int:
    """The port of `edge_api`."""
    return edge_api[1]



async def _until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection (or `limit` passes: then
    the answer so far and `inf`)."""
    t0, data = time.monotonic(), b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        return data, float("inf")
    except (ConnectionError, OSError):
        pass
    return data, time.monotonic() - t0


def _whole_request_answer(port: int, request: bytes) -> bytes:
    """Send `request` on a blocking socket (the server may cut it short), then read the
    first bytes of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except OSError:  # the server answered and closed before the end of the request
            pass
        try:
            return sock.recv(200)
        except OSError:
            return b""


def _refused(metrics: httpx.Response) -> dict[str, float]:
    """funnel_http_refused_total by reason."""
    out = {}
    for line in metrics.text.splitlines():
        if line.startswith("funnel_http_refused_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


def _token_head(length: int) -> bytes:
    return post_head("/webhook", {"Content-Type": "application/json",
                              "Content-Length": str(length),
                              "X-Webhook-Token": SECRETS["webhook_token"]})


async def _trickle(port: int, first: bytes, rest: bytes, every: float = 0.5):
    """Send `first`, then `rest` one byte per `every` s while the server keeps the connection;
    what the server answered and when it closed (seconds from the first byte)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    closing = asyncio.create_task(_until_closed(reader, 30))
    await send(writer, first)
    for byte in rest:
        if closing.done() or not await send(writer, bytes([byte])):
            break
        await asyncio.sleep(every)
    data, took = await closing
    writer.close()
    return data, took


async def test_a_trickled_header_is_cut_off_at_the_header_deadline(edge):
    # 40 more bytes at 2 per second would take 20 s
    data, took = await _trickle(edge, b"P", b"OST /webhook HTTP/1.1\r\nHost: x\r\nX-Slow: " +
                                b"a" * 40)
    assert took <= HEADER_TIMEOUT + SLACK, "the server held a trickled header"
    assert not data.startswith(b"HTTP/1.1 2")


async def test_a_connection_that_sends_nothing_is_closed(edge):
    reader, writer = await asyncio.open_connection("127.0.0.1", edge)
    _, took = await _until_closed(reader, 20)
    writer.close()
    assert took <= HEADER_TIMEOUT + SLACK


async def test_a_trickled_body_gets_408_at_the_body_deadline_and_nothing_is_stored(
        edge, sec_settings, clean_redis):
    before = stream_lengths(clean_redis, sec_settings)
    body = payload("generic_customer.json")
    data, took = await _trickle(edge, _token_head(len(body)), body)
    assert data.startswith(b"HTTP/1.1 408"), data[:300]
    assert b'"body_timeout"' in data
    assert took <= BODY_TIMEOUT + SLACK
    assert stream_lengths(clean_redis, sec_settings) == before


async def test_oversized_headers_get_431_without_the_worker_buffering_them(edge, edge_api):
    pids = api_worker_pids(edge_api[0])
    assert pids, "the API worker was not found"
    before = rss_mb(pids)

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge)
        closing = asyncio.create_task(_until_closed(reader, 20))
        await send(writer, b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        for _ in range(8):  # 8 MB of one header line, never ended
            if closing.done() or not await send(writer, b"a" * MB):
                break
        data, took = await closing
        writer.close()
        assert took < float("inf"), "the connection stayed open"
        return data

    answers = await asyncio.gather(*(one() for _ in range(10)))
    grown = rss_mb(pids) - before
    assert grown < 40, f"10 x 8 MB header lines grew the worker by {grown:.0f} MB"
    assert not any(a.startswith(b"HTTP/1.1 2") for a in answers)
    # Those senders keep writing after the server answered, and asyncio drops what a reset
    # connection still had to read, so their 431 is rarely seen. A plain socket that sends its
    # whole request and then reads sees it every time.
    data = await asyncio.to_thread(_whole_request_answer, edge, b"POST /webhook HTTP/1.1\r\n"
                                   b"Host: x\r\nX-Pad: " + b"a" * MB + b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 431"), data[:200]


async def test_too_many_headers_get_431(edge):
    reader, writer = await asyncio.open_connection("127.0.0.1", edge)
    await send(writer, post_head("/webhook", {f"X-H{i}": "1" for i in range(200)}))
    data, _ = await _until_closed(reader, 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 431"), data[:200]


async def test_many_unauthenticated_partial_bodies_are_refused_and_let_go(edge, edge_api):
    pids = api_worker_pids(edge_api[0])
    before = rss_mb(pids)

    async def one() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", edge)
        closing = asyncio.create_task(_until_closed(reader, 20))
        # 3 MB declared, 1 MB sent, then the sender just waits
        await send(writer, post_head("/webhook", {"Content-Type": "application/json",
                                               "Content-Length": str(3 * MB)}) + b"x" * MB)
        result = await closing
        writer.close()
        return result

    results = await asyncio.gather(*(one() for _ in range(50)))
    grown = rss_mb(pids) - before
    assert all(data.startswith(b"HTTP/1.1 401") for data, _ in results)
    assert all(took <= SLACK for _, took in results), "connections stayed open after the 401"
    assert grown < 40, f"50 partial bodies grew the worker by {grown:.0f} MB"


async def test_bodies_past_the_cap_get_503_with_retry_after_then_service_resumes(
        edge, sec_settings, clean_redis):
    body = payload("generic_customer.json")
    held = []
    for _ in range(MAX_READING):  # a valid token, the body never finished
        reader, writer = await asyncio.open_connection("127.0.0.1", edge)
        await send(writer, _token_head(len(body)) + body[:10])
        held.append((reader, writer))
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge}", timeout=10) as client:
        before = _refused(await client.get("/metrics"))
        refused = await client.post("/webhook", content=body, headers={
            "Content-Type": "application/json", "X-Webhook-Token": SECRETS["webhook_token"]})
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "3"
        assert refused.json()["error"] == "busy"
        assert (await client.get("/healthz")).status_code == 200  # no body: not capped
        answers = await asyncio.gather(*(_until_closed(r, 20) for r, _ in held))
        assert all(data.startswith(b"HTTP/1.1 408") for data, _ in answers)
        accepted = await client.post("/webhook", content=body, headers={
            "Content-Type": "application/json", "X-Webhook-Token": SECRETS["webhook_token"]})
        assert accepted.status_code == 200, accepted.text
        after = _refused(await client.get("/metrics"))
    for _, writer in held:
        writer.close()
    assert after["busy"] - before.get("busy", 0) == 1
    assert after["body_timeout"] - before.get("body_timeout", 0) == MAX_READING
    stored = sum(stream_lengths(clean_redis, sec_settings).values())
    assert stored == 1, "only the accepted message is on the streams"


# --------------------------------------------------------------------------- through nginx

NGINX = (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
         or shutil.which("nginx", path=str(ROOT / ".funnel/tools/nginx/usr/sbin")))
TEMPLATE = ROOT / "deploy" / "nginx" / "templates" / "funnel.conf.template"


def render(template: str, values: dict[str, str]) -> str:
    """What the nginx image does at start-up: each ${NAME} replaced by its value (nginx's own
    $variables, without braces, stay)."""
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], template)


@pytest.fixture(scope="module")
def proxy(stack_env, sec_settings, tmp_path_factory) -> Iterator[int]:
    """The compose file's nginx template with tighter limits than the API behind it (a `funnel
    api` with the default limits), so that each refusal below can only be the proxy's."""
    if not NGINX:
        pytest.skip("nginx is not installed (.ci/install-debian installs Debian's package)")
    home = tmp_path_factory.mktemp("nginx")
    api_port, port = free_port(), free_port()
    api_env = {k: v for k, v in _env(stack_env, sec_settings).items()
               if not k.startswith("HTTP_")}
    api = start_api(api_env, api_port, home / "api.log", workers=1)
    (home / "funnel.conf").write_text(render(TEMPLATE.read_text(), {
        "PROXY_UPSTREAM": f"127.0.0.1:{api_port}", "PROXY_LISTEN": f"127.0.0.1:{port}",
        "PROXY_HEADER_TIMEOUT": "2s", "PROXY_BODY_TIMEOUT": "2s",
        "PROXY_MAX_HEADER_LINE": "4k", "PROXY_MAX_BODY_SIZE": "1m",
        "PROXY_CONNECTIONS_PER_CLIENT": "3"}))
    user = "user root;" if os.geteuid() == 0 else ""
    temp = " ".join(f"{kind}_temp_path {home}/{kind};" for kind in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (home / "nginx.conf").write_text(
        f"{user} worker_processes 1; daemon off; pid {home}/nginx.pid;"
        f" error_log {home}/error.log warn; events {{ worker_connections 512; }}"
        f" http {{ access_log off; {temp} include {home}/funnel.conf; }}")
    proc = subprocess.Popen([NGINX, "-p", str(home), "-c", str(home / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((home / "error.log").read_text()[-2000:])
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        stop_process_group(api)


def test_the_proxy_forwards_a_webhook(proxy, clean_redis):
    body = payload("generic_customer.json")
    res = httpx.post(f"http://127.0.0.1:{proxy}/webhook", content=body, headers={
        "Content-Type": "application/json", "X-Webhook-Token": SECRETS["webhook_token"]})
    assert res.status_code == 200, res.text
    assert orjson.loads(res.content)["messages"] == 1


async def test_the_proxy_cuts_off_trickled_headers_and_stalled_bodies(
        proxy, sec_settings, clean_redis):
    # the API behind allows 10 s for headers and 20 s for a body: these are the proxy's 2 s
    data, took = await _trickle(proxy, b"P", b"OST /webhook HTTP/1.1\r\nHost: x\r\nX-S: " +
                                b"a" * 40)
    assert took <= 2 + SLACK
    body = payload("generic_customer.json")
    data, took = await _trickle(proxy, _token_head(len(body)), body, every=3)
    assert took <= 2 + SLACK
    assert not data.startswith(b"HTTP/1.1 2"), data[:200]
    assert sum(stream_lengths(clean_redis, sec_settings).values()) == 0


def test_the_proxy_refuses_large_headers_and_bodies(proxy, sec_settings, clean_redis):
    url = f"http://127.0.0.1:{proxy}/webhook"
    headers = {"Content-Type": "application/json", "X-Webhook-Token": SECRETS["webhook_token"]}
    # a 6 KB header line: under the API's 64 KiB, over the proxy's 4 KB
    res = httpx.post(url, content=payload("generic_customer.json"),
                     headers={**headers, "X-Pad": "a" * 6_000})
    assert res.status_code == 400 and b"Too Large" in res.content
    # 2 MB streamed without a length: under the API's 3 MiB, over the proxy's 1 MB
    doc = orjson.loads(payload("generic_customer.json"))
    doc["message"]["text"] = "a" * (2 * MB)
    big = orjson.dumps(doc)
    res = httpx.post(url, content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                     headers=headers)
    assert res.status_code == 413
    assert sum(stream_lengths(clean_redis, sec_settings).values()) == 0


async def test_the_proxy_caps_requests_in_progress_per_client(proxy, sec_settings, clean_redis):
    body = payload("generic_customer.json")
    held = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        await send(writer, _token_head(len(body)) + body[:10])
        held.append((reader, writer))
    await asyncio.sleep(0.3)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy}", timeout=10) as client:
        res = await client.post("/webhook", content=body, headers={
            "Content-Type": "application/json", "X-Webhook-Token": SECRETS["webhook_token"]})
        assert res.status_code == 503
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.5)
        res = await client.post("/webhook", content=body, headers={
            "Content-Type": "application/json", "X-Webhook-Token": SECRETS["webhook_token"]})
        assert res.status_code == 200, res.text

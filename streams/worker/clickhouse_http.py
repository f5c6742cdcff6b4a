"""ClickHouse's HTTP interface, read-only, served by the worker that owns embedded ClickHouse.

Embedded ClickHouse opens in one process: analysts' own clients (clickhouse-connect, DBeaver,
Grafana, ``curl``) reach it through the worker, on its own port (``CRM360_CLICKHOUSE_HTTP_PORT``,
8123), as they would a ClickHouse server:

- the query in the URL (``?query=``), the body, or both (the URL's first, as ClickHouse
  does); its output format from its ``FORMAT`` clause, else ``default_format``, else
  ``TabSeparated``, written by ClickHouse itself, streamed as it comes;
- query parameters as ``param_<name>``; the API key as the password (basic auth, ``password``
  or ``X-ClickHouse-Key``) or as a bearer token; ``GET /ping`` answers ``Ok.``;
- every query takes the analysts' read-only path (``sinks.query``): one SELECT over crm360's
  tables (and the catalog tables clients read on connect), on read-only sessions whose limits
  no query can lift. Other settings a client sends are not applied (a read-only session
  refuses them); clients do not need them.

Errors come back as ClickHouse's do: ``Code: <n>. DB::Exception: <message>`` with the code
in ``X-ClickHouse-Exception-Code``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from clickhouse_connect.driver.client import Client

from sinks.query import ReadOnlyPool, Refused, parse_select

log = logging.getLogger("crm360")
#: The limits of a query through the interface: no cap on result rows (results stream), but
#: on time and memory; read-only last.
INTERFACE_LIMITS: dict[str, int | str] = {
    "max_execution_time": 300,  # seconds
    "max_memory_usage": 2_000_000_000,  # bytes
    "readonly": 1,
}
#: ClickHouse's error codes for a refused query, a failed authentication.
ACCESS_DENIED, AUTHENTICATION_FAILED = 497, 516
_CODE = re.compile(r"Code: (\d+)\.")
#: Content types of the formats browsers and tools look at; others are bytes.
CONTENT_TYPES = {
    "JSON": "application/json",
    "JSONCompact": "application/json",
    "JSONEachRow": "application/x-ndjson",
    "CSV": "text/csv",
    "CSVWithNames": "text/csv",
    "TabSeparated": "text/tab-separated-values",
    "TSV": "text/tab-separated-values",
    "TabSeparatedWithNames": "text/tab-separated-values",
    "TSVWithNames": "text/tab-separated-values",
    "Pretty": "text/plain",
}
#: Chunks of output in flight between the query's thread and the response, and their size.
QUEUED_CHUNKS = 8
CHUNK_BYTES = 1 << 20


def exception(code: int, message: str, status: int) -> web.Response:
    """An error as ClickHouse answers one."""
    text = message if message.startswith("Code: ") else f"Code: {code}. DB::Exception: {message}"
    return web.Response(status=status, text=text.rstrip() + "\n", headers={"X-ClickHouse-Exception-Code": str(code)})


def given_key(request: web.Request) -> str:
    """The password or key a client sent, however ClickHouse clients send it."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ")
    if header.startswith("Basic "):
        try:
            return base64.b64decode(header.removeprefix("Basic ")).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return request.headers.get("X-ClickHouse-Key", request.query.get("password", ""))


class ClickHouseInterface:
    """The interface on ``host``:``port``, answering from ``reads`` (its own pool), with ``api_key``."""

    def __init__(self, host: str, port: int, reads: ReadOnlyPool, api_key: str | None) -> None:
        self.host, self.port, self.reads, self.api_key = host, port, reads, api_key or ""
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_get("/ping", self.ping)
        self.app.router.add_route("*", "/", self.query)

    async def serve(self) -> None:
        """Serve until cancelled (the worker stops)."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, self.host, self.port).start()
            except OSError as error:  # the worker goes on without it
                log.error(
                    "ClickHouse's HTTP interface is not served at %s:%s (%s): set CRM360_CLICKHOUSE_HTTP_PORT "
                    "to a free port",
                    self.host,
                    self.port,
                    error.strerror,
                )
                return
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def query(self, request: web.Request) -> web.StreamResponse:
        if self.api_key and not hmac.compare_digest(given_key(request).encode(), self.api_key.encode()):
            return exception(AUTHENTICATION_FAILED, "crm360: wrong or missing API key (the password)", 401)
        body = (await request.read()).decode("utf-8", errors="replace")
        sql = "\n".join(part for part in (request.query.get("query", ""), body) if part.strip())
        if not sql:
            return web.Response(text="Ok.\n")
        parameters = {
            name.removeprefix("param_"): value for name, value in request.query.items() if name.startswith("param_")
        }
        default = request.query.get("default_format", request.headers.get("X-ClickHouse-Format", "TabSeparated"))
        chunks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(QUEUED_CHUNKS)
        loop = asyncio.get_running_loop()
        stop = threading.Event()  # the client went away: the query's thread stops reading

        def put(item: bytes | BaseException | None) -> None:
            asyncio.run_coroutine_threadsafe(chunks.put(item), loop).result()

        def run(client: Client) -> str:
            select = parse_select(client, sql, catalog=True)
            fmt = select.format or default
            put(fmt.encode())  # the format first, so the headers can be sent
            for chunk in _stream(client, select.sql, parameters, fmt):
                if stop.is_set():
                    break
                put(chunk)
            return fmt

        running = asyncio.ensure_future(self.reads.run(lambda client: _finish(run, client, put)))
        first = await chunks.get()
        if isinstance(first, BaseException):
            await running
            return _error(first)
        assert isinstance(first, bytes)
        fmt = first.decode()
        response = web.StreamResponse(
            headers={
                "Content-Type": CONTENT_TYPES.get(fmt, "application/octet-stream"),
                "X-ClickHouse-Format": fmt,
                "X-ClickHouse-Timezone": "UTC",
                "X-ClickHouse-Server-Display-Name": "crm360",
            }
        )
        try:
            while True:
                chunk = await chunks.get()
                if chunk is None:
                    break
                if isinstance(chunk, BaseException):  # after output began: ClickHouse writes it into the body too
                    if not response.prepared:
                        return _error(chunk)
                    await response.write(f"\n{_message(chunk)}\n".encode())
                    break
                if not response.prepared:
                    await response.prepare(request)
                await response.write(chunk)
            if not response.prepared:
                await response.prepare(request)
            await response.write_eof()
        finally:
            stop.set()
            while not running.done():  # let the thread finish its last put
                while not chunks.empty():
                    chunks.get_nowait()
                await asyncio.sleep(0.01)
        return response


def _finish(run: Any, client: Client, put: Any) -> None:
    """``run`` in the pool's thread; its failure, or its end (None), goes to the response."""
    try:
        run(client)
    except Exception as error:  # noqa: BLE001 - every failure is the client's answer
        put(error)
        return
    put(None)


def _stream(client: Client, sql: str, parameters: dict[str, str], fmt: str) -> Iterator[bytes]:
    """The output in chunks of :data:`CHUNK_BYTES` (the stream, a file, iterates lines: a
    million rows of TSV took 150 s line by line)."""
    stream = client.raw_stream(sql, parameters=parameters or None, fmt=fmt)
    assert isinstance(stream, io.IOBase)  # embedded ClickHouse's (a server's is a StreamContext)
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    finally:
        stream.close()


def _message(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _error(error: BaseException) -> web.Response:
    if isinstance(error, Refused):
        return exception(ACCESS_DENIED, f"crm360 runs read-only queries only: {error}", 403)
    message = _message(error)
    found = _CODE.search(message)
    start = message.find("Code: ")
    return exception(int(found.group(1)) if found else 1, message[start:] if start >= 0 else message, 400)

"""A TCP proxy on loopback that adds a fixed delay to every call: a far-away store, on this machine.

Each byte the client sends reaches the server ``delay`` seconds later (bandwidth is not limited:
bytes are scheduled by arrival time, not queued behind one another), and the answers come back
at once, so every request/response round trip -- an HTTP call to Azurite or Cosmos, a PostgreSQL
query -- takes ``delay`` longer, as it would across a 20 ms network. TLS passes through untouched.

    with LatencyProxy(("127.0.0.1", 5432), delay=0.020) as proxy:
        url = f"postgresql://u@127.0.0.1:{proxy.port}/db"

It listens on 127.0.0.1 only and runs on a thread of its own (an asyncio loop); ``close()``
ends every connection.
"""

from __future__ import annotations

import asyncio
import threading
import time


class LatencyProxy:
    def __init__(self, target: tuple[str, int], delay: float, host: str = "127.0.0.1", port: int = 0):
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.target, self.delay = target, float(delay)
        self._host, self._want_port = host, port
        self.port: int | None = None
        self.connections = 0
        self.bytes_up = self.bytes_down = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set = set()
        self._thread = threading.Thread(target=self._run, name="sekiops-latency-proxy", daemon=True)

    # -- lifecycle --

    def start(self) -> LatencyProxy:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        if self.port is None:
            raise RuntimeError("latency proxy did not start")
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def stop():
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, self._host, self._want_port))
            self.port = server.sockets[0].getsockname()[1]
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    # -- one connection --

    async def _handle(self, creader, cwriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            self._tasks.discard(task)
            return
        up = asyncio.ensure_future(self._pump(creader, swriter, self.delay, True))
        down = asyncio.ensure_future(self._pump(sreader, cwriter, 0.0, False))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # close(): the connection ends here
            pass
        finally:
            for t in (up, down):
                t.cancel()
            for w in (swriter, cwriter):
                try:
                    w.close()
                except Exception:  # noqa: BLE001 - closing a dead socket
                    pass
            self._tasks.discard(task)

    async def _pump(self, reader, writer, delay: float, upstream: bool) -> None:
        if delay <= 0:
            while data := await reader.read(65536):
                self._count(len(data), upstream)
                writer.write(data)
                await writer.drain()
            return
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while True:
                due, data = await queue.get()
                if data is None:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                self._count(len(data), upstream)
                queue.put_nowait((time.monotonic() + delay, data))
            queue.put_nowait((0.0, None))
            await sender
        finally:
            sender.cancel()

    def _count(self, n: int, upstream: bool) -> None:
        if upstream:
            self.bytes_up += n
        else:
            self.bytes_down += n

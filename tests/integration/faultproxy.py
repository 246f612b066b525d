"""A loopback TCP fault proxy for the tests: Kafka outages without killing the (memory-only) broker.

Run the broker with ``EmbeddedBroker(advertised_port=proxy.port)`` so that every client connection
after bootstrap goes through the proxy, then break the path on purpose::

    proxy = FaultProxy()                      # picks a free port (the broker's is not known yet)
    broker = EmbeddedBroker(advertised_port=proxy.port)
    with broker, proxy.forward_to(broker.host, broker.port):
        proxy.refuse()                        # "Connection refused" until restore()
        proxy.restore()

The proxy runs an asyncio loop in a daemon thread of its own. Every control is called from the
test's thread and returns once the loop has applied it (so after ``cut()`` the connections are
closed). The counters are plain ints written by the loop thread only; reading them is safe.

Modes, until ``restore()``:

- ``refuse()``: close every connection and the listening socket itself, so new connections get
  ECONNREFUSED at once, as from a broker that is down. ``restore()`` listens again on the same port
  (SO_REUSEADDR). The port stays unbound in between: nothing else should grab it in a test run.
- ``blackhole()``: connections are accepted and kept, but nothing is forwarded: requests time out,
  as in a network partition. Bytes are held, not dropped, and flow on ``restore()`` in order, so
  the Kafka stream of each connection stays consistent. ``cut()`` then ``restore()`` drops them instead.
- ``latency(ms)``: every forwarded chunk waits this long first (a round trip pays it twice);
  ``restore()`` resets it to 0 too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from connectors.broker import LOOPBACK, free_port


class FaultProxy:
    """Forwards each connection on ``LOOPBACK:port`` to ``target_host:target_port``, with faults on demand."""

    def __init__(self, target_host: str = LOOPBACK, target_port: int | None = None, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.accepted = 0  # connections accepted while forwarding (or blackholed)
        self.bytes_up = 0  # client -> target, bytes actually forwarded
        self.bytes_down = 0  # target -> client
        self.mode = "forward"  # forward | refuse | blackhole
        self._delay_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()  # set unless blackholed (binds to the proxy's loop on first use)
        self._flowing.set()
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # -- life cycle -------------------------------------------------------------------------------
    def forward_to(self, host: str, port: int) -> FaultProxy:
        """Set the target (when it was not known at construction); returns self for ``with``."""
        self.target = (host, port)
        return self

    def start(self) -> str:
        """Start listening; returns ``address``."""
        assert self.target[1] is not None, "no target port: FaultProxy(target_port=...) or forward_to()"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        self._call(self._listen())
        return self.address

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- controls (any thread) --------------------------------------------------------------------
    def cut(self) -> None:
        """Reset every open connection now, both sides; new ones are served as usual."""
        self._call(self._abort_all())

    def refuse(self) -> None:
        """Close all connections and stop listening: new connections are refused until ``restore()``."""
        self._call(self._set_mode("refuse"))

    def blackhole(self) -> None:
        """Keep and accept connections but forward nothing until ``restore()``."""
        self._call(self._set_mode("blackhole"))

    def latency(self, ms: float) -> None:
        """Delay every forwarded chunk by ``ms`` milliseconds (0: none)."""
        self._delay_s = ms / 1000

    def restore(self) -> None:
        """Back to plain forwarding: listening, flowing, no latency."""
        self._delay_s = 0.0
        self._call(self._set_mode("forward"))

    # -- the loop's side --------------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None, "FaultProxy is not started"
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        deadline = time.monotonic() + 2.0
        while True:  # the old socket may need a moment to let go of the port
            try:
                self._server = await asyncio.start_server(self._handle, LOOPBACK, self.port, reuse_address=True)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "refuse":
            if self._server is not None:
                self._server.close()  # the listening socket closes now; its connections are ours to end
                self._server = None
            await self._abort_all()
        elif self._server is None:
            await self._listen()
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()

    async def _abort_all(self) -> None:
        for client, upstream in list(self._conns):
            client.transport.abort()  # RST, not a polite FIN: the peer sees a broken connection
            upstream.transport.abort()
        self._conns.clear()
        await asyncio.sleep(0)  # let the pumps see it

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._flowing.set()  # held pumps wake up, find their connection closed and end
        await self._abort_all()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                upstream_reader, upstream = await asyncio.open_connection(*self.target)
            except OSError:
                client.transport.abort()
                return
            if self.mode == "refuse":  # accepted in the instant before the listener closed
                client.transport.abort()
                upstream.transport.abort()
                return
            self.accepted += 1
            conn = (client, upstream)
            self._conns.add(conn)
            pumps = [asyncio.ensure_future(self._pump(client_reader, upstream, "bytes_up")),
                     asyncio.ensure_future(self._pump(upstream_reader, client, "bytes_down"))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)  # one side gone: end both
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                self._conns.discard(conn)
                client.transport.abort()
                upstream.transport.abort()
        except asyncio.CancelledError:  # stop(): end quietly (asyncio's server callback logs cancelled handlers)
            pass
        finally:
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: str) -> None:
        try:
            while chunk := await reader.read(65536):
                await self._flowing.wait()  # blackholed: hold the bytes
                if self._delay_s:
                    await asyncio.sleep(self._delay_s)
                if writer.transport.is_closing():
                    return
                # counted before the write: the peer can only have the bytes once the count includes them
                setattr(self, counter, getattr(self, counter) + len(chunk))
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            return

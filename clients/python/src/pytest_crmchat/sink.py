"""A local HTTP handler that collects event deliveries, for ``event_sink``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, List, Optional, Union
from urllib.parse import urlsplit

from .phpquery import PhpArray, parse_php_query

__all__ = ["Delivery", "EventSink"]


@dataclass
class Delivery:
    """One request the sink received. ``form`` is the body parsed with PHP's rules, as a PHP handler's
    ``$_POST`` would be (for form bodies; empty otherwise)."""

    http_method: str
    path: str
    query: str
    headers: dict
    body: bytes
    form: PhpArray = field(default_factory=PhpArray)
    received: float = 0.0

    @property
    def event(self) -> Optional[str]:
        return self.form.get("event")

    @property
    def data(self) -> dict:
        value = self.form.get("data")
        return value if isinstance(value, dict) else {}

    @property
    def auth(self) -> dict:
        value = self.form.get("auth")
        return value if isinstance(value, dict) else {}

    @property
    def ts(self) -> Optional[int]:
        value = self.form.get("ts")
        return int(value) if isinstance(value, str) and value.isdigit() else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


Answer = Union[int, Callable[[Delivery], int]]


class EventSink:
    """Collects every request posted to :attr:`url` (``http://127.0.0.1:PORT/``; crmchat accepts it as a
    handler, like the vendor does, while it would refuse ``localhost``). Answers 200 unless told otherwise
    with :meth:`answer`."""

    def __init__(self, host: str = "127.0.0.1"):
        self._deliveries: List[Delivery] = []
        self._changed = threading.Condition()
        self._answer: Answer = 200
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as crmchat's client expects

            def _handle(self) -> None:
                body = self._read_body()
                parts = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                delivery = Delivery(
                    http_method=self.command,
                    path=parts.path,
                    query=parts.query,
                    headers=headers,
                    body=body,
                    received=time.time(),
                )
                if headers.get("content-type", "").split(";")[0].strip().lower() == (
                    "application/x-www-form-urlencoded"
                ):
                    delivery.form = parse_php_query(body)
                status = sink._status_for(delivery)
                with sink._changed:
                    sink._deliveries.append(delivery)
                    sink._changed.notify_all()
                reply = b"OK" if 200 <= status < 300 else b"refused by the test"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            do_POST = do_PUT = do_GET = _handle

            def log_message(self, format, *args) -> None:  # quiet: deliveries carry tokens
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="crmchat-event-sink", daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}/"

    def _status_for(self, delivery: Delivery) -> int:
        answer = self._answer
        return answer(delivery) if callable(answer) else answer

    def answer(self, status: Answer) -> None:
        """How to answer from now on: an HTTP status, or a function of the :class:`Delivery` returning one
        (a non-2xx answer is a failed delivery, which crmchat retries)."""
        self._answer = status

    @property
    def deliveries(self) -> List[Delivery]:
        """Everything received so far, oldest first."""
        with self._changed:
            return list(self._deliveries)

    def events(self, event: Optional[str] = None) -> List[Delivery]:
        return [d for d in self.deliveries if event is None or d.event == event.upper()]

    def wait(self, event: Optional[str] = None, count: int = 1, timeout: float = 10.0) -> List[Delivery]:
        """Waits until ``count`` deliveries (of ``event``, if given) have arrived and returns them; raises
        ``TimeoutError`` with what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matching = [d for d in self._deliveries if event is None or d.event == event.upper()]
                if len(matching) >= count:
                    return matching[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [d.event or d.path for d in self._deliveries]
                    raise TimeoutError(
                        f"{len(matching)} of {count} {event or 'deliveries'} arrived in {timeout:g} s; "
                        f"received: {seen}"
                    )
                self._changed.wait(left)

    def clear(self) -> None:
        with self._changed:
            self._deliveries.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "EventSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

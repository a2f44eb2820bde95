"""A client for crmchat's control API (``/_crmchat/…``): reset, state, snapshots, the request journal, faults,
the clock, applications, events. Plain standard library, so the plugin brings no dependencies of its own."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

__all__ = ["Control", "ControlError", "RequestLog"]

StateDocument = Union[Mapping[str, Any], str, Path]


class ControlError(Exception):
    """The control API refused a call: ``status`` (HTTP), ``error`` (its code, e.g. ``invalid_state``),
    ``message`` and, for a portal-state validation failure, ``problems``."""

    def __init__(self, status: int, body: Any, what: str):
        self.status = status
        self.body = body
        details = body if isinstance(body, dict) else {}
        self.error = details.get("error")
        self.message = details.get("message")
        self.problems = details.get("problems", [])
        text = f"{what}: HTTP {status}"
        if self.error:
            text += f" {self.error}"
        if self.message:
            text += f": {self.message}"
        if self.problems:
            text += "\n  " + "\n  ".join(self.problems)
        elif not details and body:
            text += f": {body!r}"
        super().__init__(text)


class RequestLog(list):
    """The journal entries a query returned (newest last), with the journal's ``total``."""

    def __init__(self, entries: Iterable[dict], total: int):
        super().__init__(entries)
        self.total = total


class Control:
    """Calls one crmchat's control API with its token. Every method returns the decoded JSON answer."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"Control({self.base_url!r})"

    # -- plumbing --------------------------------------------------------------------------------------------
    def call(
        self,
        http_method: str,
        path: str,
        body: Any = None,
        *,
        query: Optional[Mapping[str, Any]] = None,
        raw_body: Optional[bytes] = None,
        content_type: str = "application/json",
        text: bool = False,
    ) -> Any:
        """One control request; ``path`` is relative to ``/_crmchat/`` (or absolute, e.g. ``/metrics``)."""
        url = self.base_url + (path if path.startswith("/") else "/_crmchat/" + path)
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        data = raw_body
        if data is None and body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=http_method)
        request.add_header("Authorization", f"Bearer {self._token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with _opener.open(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                decoded: Any = json.loads(payload)
            except ValueError:
                decoded = payload.decode("utf-8", errors="replace")
            raise ControlError(e.code, decoded, f"{http_method} {urllib.parse.urlsplit(url).path}") from None
        if text:
            return payload.decode("utf-8", errors="replace")
        return json.loads(payload) if payload.strip() else None

    # -- state -----------------------------------------------------------------------------------------------
    def state(self, detail: Optional[str] = None) -> dict:
        """The whole portal state, as ``crmchat state export`` writes it (``detail="structure"``: without
        members and messages)."""
        return self.call("GET", "state", query={"detail": detail})

    def load(self, document: StateDocument, *, replace: bool = False) -> Any:
        """Loads a state document: a dict, or the path of a JSON or YAML file. Upserts by id, like
        ``crmchat state load``; ``replace=True`` makes it the whole portal (``PUT``)."""
        http_method = "PUT" if replace else "POST"
        if isinstance(document, (str, Path)):
            path = Path(document)
            yaml = path.suffix.lower() in (".yaml", ".yml")
            return self.call(
                http_method,
                "state",
                raw_body=path.read_bytes(),
                content_type="application/yaml" if yaml else "application/json",
            )
        return self.call(http_method, "state", dict(document))

    def replace_state(self, document: StateDocument) -> Any:
        return self.load(document, replace=True)

    def reset(self) -> dict:
        """Back to the start-up state (the fixture file or the demo portal); also clears the journal, events,
        rate-limit buckets, operating time, faults and the clock offset. ``{"ok": true, "took_ms": N}``."""
        return self.call("POST", "reset")

    def snapshot(self, name: str) -> Any:
        """Saves the current state under ``name`` (``[A-Za-z0-9_-]{1,64}``)."""
        return self.call("POST", f"snapshots/{urllib.parse.quote(name, safe='')}")

    def restore(self, name: str) -> Any:
        """Makes the state exactly the snapshot ``name``."""
        return self.call("POST", f"snapshots/{urllib.parse.quote(name, safe='')}/restore")

    def snapshots(self) -> list:
        return self.call("GET", "snapshots")

    def delete_snapshot(self, name: str) -> Any:
        return self.call("DELETE", f"snapshots/{urllib.parse.quote(name, safe='')}")

    # -- the request journal ---------------------------------------------------------------------------------
    def requests(
        self,
        method: Optional[str] = None,
        *,
        status: Optional[int] = None,
        error: Optional[str] = None,
        user_id: Optional[int] = None,
        since_id: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> RequestLog:
        """The REST calls crmchat received, newest last, filtered like ``GET /_crmchat/requests``."""
        answer = self.call(
            "GET",
            "requests",
            query={
                "method": method,
                "status": status,
                "error": error,
                "user_id": user_id,
                "since_id": since_id,
                "limit": limit,
            },
        )
        return RequestLog(answer["requests"], answer["total"])

    def clear_requests(self) -> Any:
        return self.call("DELETE", "requests")

    # -- faults ----------------------------------------------------------------------------------------------
    def fault(
        self,
        method: str = "*",
        error: Optional[str] = None,
        *,
        http_status: Optional[int] = None,
        delay_ms: Optional[int] = None,
        times: Optional[int] = None,
        probability: Optional[float] = None,
        webhook_id: Optional[int] = None,
        client_id: Optional[str] = None,
    ) -> int:
        """Makes matching calls fail (or slow down) on purpose; returns the rule's id. ``error`` is a vendor
        error code (``QUERY_LIMIT_EXCEEDED``, ``expired_token``, …) or ``connection_reset``; ``times`` removes
        the rule after that many matches."""
        rule: dict = {"method": method, "error": error}
        for key, value in (
            ("http_status", http_status),
            ("delay_ms", delay_ms),
            ("times", times),
            ("probability", probability),
            ("webhook_id", webhook_id),
            ("client_id", client_id),
        ):
            if value is not None:
                rule[key] = value
        return self.call("POST", "faults", rule)["id"]

    def faults(self) -> list:
        return self.call("GET", "faults")

    def delete_fault(self, fault_id: int) -> Any:
        return self.call("DELETE", f"faults/{int(fault_id)}")

    def clear_faults(self) -> Any:
        return self.call("DELETE", "faults")

    # -- the clock -------------------------------------------------------------------------------------------
    def advance_clock(self, seconds: float) -> dict:
        """Moves crmchat's clock forward (token and code expiry, rate limits, ``time`` blocks, event ``ts``)."""
        return self.call("POST", "clock", {"advance_s": seconds})

    def set_clock(self, when: Union[str, datetime]) -> dict:
        """Sets the clock to an RFC 3339 time (never backwards: crmchat answers 400 ``clock_backwards``)."""
        if isinstance(when, datetime):
            when = when.isoformat().replace("+00:00", "Z")
        return self.call("POST", "clock", {"set": when})

    def clock(self) -> dict:
        """``{"now": …, "offset_s": N}``."""
        return self.call("GET", "clock")

    def reset_clock(self) -> Any:
        """Back to real time (offset 0)."""
        return self.call("DELETE", "clock")

    # -- applications and events -----------------------------------------------------------------------------
    def install_app(self, client_id: str, user_id: int = 1, handler: Optional[str] = None) -> dict:
        """Installs an application without the OAuth dance: ``access_token``, ``refresh_token``,
        ``expires_in``, ``member_id``, ``application_token``, ``client_endpoint``, ``server_endpoint``. With a
        ``handler`` it also binds and delivers ``ONAPPINSTALL``."""
        body = {"user_id": user_id, "handler": handler}
        return self.call("POST", f"apps/{urllib.parse.quote(client_id, safe='')}/install", body)

    def uninstall_app(self, client_id: str) -> Any:
        return self.call("POST", f"apps/{urllib.parse.quote(client_id, safe='')}/uninstall", {})

    def events(self, status: Optional[str] = None, event: Optional[str] = None, limit: Optional[int] = None) -> list:
        return self.call("GET", "events", query={"status": status, "event": event, "limit": limit})

    def redeliver(self, event_id: int) -> Any:
        return self.call("POST", f"events/{int(event_id)}/redeliver", {})

    # -- the rest --------------------------------------------------------------------------------------------
    def errors(self) -> Any:
        """The error catalogue: every vendor error code crmchat can answer."""
        return self.call("GET", "errors")

    def metrics(self) -> str:
        """Prometheus text from ``/metrics``."""
        return self.call("GET", "/metrics", text=True)


# Control calls go to 127.0.0.1: never through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

"""Starting and stopping one ``crmchat serve`` for a test session."""

from __future__ import annotations

import atexit
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

from .control import Control

__all__ = ["CrmchatServer", "CrmchatStartError", "find_binary"]

# Settings from the environment that would fight the ones the plugin passes on the command line.
_OWN_SETTINGS = (
    "CRMCHAT_HTTP",
    "CRMCHAT_HTTPS",
    "CRMCHAT_DATA_DIR",
    "CRMCHAT_FIXTURE",
    "CRMCHAT_DEMO",
    "CRMCHAT_CONTROL_TOKEN",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CrmchatStartError(RuntimeError):
    """``crmchat serve`` could not be started, or did not become ready; the message has its output."""


def find_binary(explicit: Optional[str] = None) -> str:
    """The crmchat binary: ``explicit``, else ``$CRMCHAT_BIN``, else ``crmchat`` on ``PATH``."""
    candidate = explicit or os.environ.get("CRMCHAT_BIN")
    if candidate:
        path = Path(candidate).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise CrmchatStartError(f"CRMCHAT_BIN={candidate}: not an executable file")
        return str(path)
    found = shutil.which("crmchat")
    if not found:
        raise CrmchatStartError(
            "crmchat is not on PATH: install it (cargo install --path .) or set CRMCHAT_BIN to the binary"
        )
    return found


def _load_prctl():
    # Looked up in the parent: the child between fork and exec should only make the call.
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux the server gets SIGKILL when the test process dies, so even a
    killed pytest leaves no server behind."""
    if _prctl is not None:
        PR_SET_PDEATHSIG = 1
        _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


class CrmchatServer:
    """One running ``crmchat serve`` on free loopback ports, with the control API on under a random token.

    Without a ``fixture`` it serves the built-in demo portal (``--demo``); with one, that portal file. Use it
    as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        fixture: Optional[os.PathLike] = None,
        *,
        binary: Optional[str] = None,
        args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ):
        self.fixture = Path(fixture).resolve() if fixture else None
        self.binary = binary
        self.extra_args = list(args)
        self.startup_timeout = startup_timeout
        self.process: Optional[subprocess.Popen] = None
        self.data_dir: Optional[Path] = None
        self.http_url = ""  # http://127.0.0.1:PORT
        self.https_url = ""  # https://127.0.0.1:PORT
        self.ca_bundle = ""  # the server's certificate (PEM), to trust for HTTPS
        self.control: Optional[Control] = None
        self.log_path: Optional[Path] = None
        self._printed_webhook: Optional[str] = None
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._output: list[str] = []

    # -- life cycle ------------------------------------------------------------------------------------------
    def __enter__(self) -> "CrmchatServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "CrmchatServer":
        if self.process is not None:
            return self
        # The HTTPS port is chosen here, so that the server can be told its public address (--public-url): the
        # token answers' client_endpoint then points at this server. A port someone else took between choosing
        # and binding it is chosen again.
        for attempt in range(1, 4):
            port = _free_port()
            try:
                return self._start_on(port)
            except CrmchatStartError as e:
                if attempt == 3 or f"binding 127.0.0.1:{port}" not in str(e):
                    raise
        raise AssertionError("unreachable")

    def _start_on(self, https_port: int) -> "CrmchatServer":
        binary = find_binary(self.binary)
        if self.fixture is not None and not self.fixture.is_file():
            raise CrmchatStartError(f"the portal file {self.fixture} does not exist")
        self.data_dir = Path(tempfile.mkdtemp(prefix="crmchat-pytest-"))
        self.log_path = self.data_dir / "server.log"
        token = secrets.token_urlsafe(24)
        command = [binary, "serve", "--http", "127.0.0.1:0", "--https", f"127.0.0.1:{https_port}"]
        command += ["--public-url", f"https://127.0.0.1:{https_port}"]
        # One argument: a token may begin with "-".
        command += ["--data-dir", str(self.data_dir), f"--control-token={token}"]
        command += ["--fixture", str(self.fixture)] if self.fixture else ["--demo"]
        command += self.extra_args
        env = {k: v for k, v in os.environ.items() if k not in _OWN_SETTINGS}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,  # its own process group: stop() signals the whole group
                preexec_fn=_die_with_parent if _prctl is not None else None,
            )
        _running.add(self)
        threading.Thread(target=self._drain, name="crmchat-stdout", daemon=True).start()
        try:
            self._wait_until_ready(token)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL after 10 s) and removes its data directory."""
        process, self.process = self.process, None
        _running.discard(self)
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError, AttributeError):
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError, AttributeError):
                    process.kill()
                process.wait()
        if process is not None and process.stdout:
            process.stdout.close()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    # -- what tests need -------------------------------------------------------------------------------------
    @property
    def webhook(self) -> tuple[int, str]:
        """``(user_id, code)`` of the portal's first webhook (the demo's, or the first in the fixture file)."""
        if self.fixture is None:
            if not self._printed_webhook:
                raise LookupError("crmchat --demo printed no webhook URL")
            user, code = self._printed_webhook.rstrip("/").split("/rest/", 1)[1].split("/")[:2]
            return int(user), code
        hooks = _read_portal_file(self.fixture).get("webhooks") or []
        if not hooks:
            raise LookupError(f"{self.fixture} has no webhooks: add one to use webhook_url")
        return int(hooks[0]["user"]), str(hooks[0]["code"])

    def log(self) -> str:
        """The server's log so far (its standard error) and what it printed."""
        text = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
        return "\n".join(self._output) + ("\n--- log ---\n" + text if text else "")

    # -- internals -------------------------------------------------------------------------------------------
    def _drain(self) -> None:
        process = self.process
        assert process is not None and process.stdout is not None
        for raw in process.stdout:
            self._lines.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        self._lines.put(None)

    def _wait_until_ready(self, token: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        cert = None
        control_token = token
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise CrmchatStartError(f"crmchat did not print `ready` in {self.startup_timeout:g} s:\n{self.log()}")
            if line is None:
                code = self.process.wait() if self.process else None
                raise CrmchatStartError(f"crmchat serve exited ({code}) before it was ready:\n{self.log()}")
            if not line.startswith("try:") and not line.startswith("     curl"):
                self._output.append(line)
            if line.startswith("http: "):
                self.http_url = line[len("http: ") :].strip()
            elif line.startswith("https: "):
                self.https_url = line[len("https: ") :].strip()
            elif line.startswith("tls certificate: "):
                cert = line[len("tls certificate: ") :].strip().removesuffix(" (new)")
            elif line.startswith("webhook: "):
                self._printed_webhook = line[len("webhook: ") :].strip()
            elif line.startswith("control: ") and "(token " in line:
                # --demo prints the token it uses; it is ours unless a future version picks its own.
                control_token = line.rsplit("(token ", 1)[1].rstrip(")").strip() or token
            elif line.strip() == "ready":
                break
        if not (self.http_url and self.https_url and cert):
            raise CrmchatStartError(f"crmchat did not print its addresses and certificate:\n{self.log()}")
        self.ca_bundle = cert
        self.control = Control(self.http_url, control_token)
        # Keep draining standard output so the server never blocks on a full pipe.
        threading.Thread(target=self._discard_output, daemon=True).start()
        self._wait_for_readyz(deadline)

    def _discard_output(self) -> None:
        while self._lines.get() is not None:
            pass

    def _wait_for_readyz(self, deadline: float) -> None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        last = ""
        while time.monotonic() < deadline:
            if not self.running:
                raise CrmchatStartError(f"crmchat serve exited before /readyz answered:\n{self.log()}")
            try:
                with opener.open(self.http_url + "/readyz", timeout=5) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        raise CrmchatStartError(f"/readyz did not answer 200 in {self.startup_timeout:g} s ({last}):\n{self.log()}")


def _read_portal_file(path: Path) -> dict:
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore
        except ImportError:
            raise LookupError(f"{path} is YAML: install PyYAML to read its webhook, or use a JSON portal file")
        return yaml.safe_load(path.read_text()) or {}
    return json.loads(path.read_text())


def combined_ca_bundle(cert: str, directory: Path) -> str:
    """A PEM file with the system's trusted certificates plus crmchat's, so pointing ``REQUESTS_CA_BUNDLE`` or
    ``SSL_CERT_FILE`` at it trusts crmchat without distrusting anything else."""
    out = directory / "ca-bundle.pem"
    parts = []
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            parts.append(Path(candidate).read_text(errors="replace"))
            break
    else:
        try:
            import certifi  # type: ignore

            parts.append(Path(certifi.where()).read_text())
        except ImportError:
            pass
    parts.append(Path(cert).read_text())
    out.write_text("\n".join(parts))
    return str(out)


# Servers still running when the interpreter exits (a crash in a fixture, KeyboardInterrupt) are stopped.
_running: "set[CrmchatServer]" = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()

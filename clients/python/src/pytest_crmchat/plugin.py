"""The pytest plugin (entry point ``pytest11: crmchat``): fixtures ``crmchat_server``, ``crmchat`` and
``event_sink``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

from .control import Control
from .server import CrmchatServer, combined_ca_bundle
from .sink import EventSink

__all__ = ["Crmchat"]


class Crmchat:
    """What a test gets from the ``crmchat`` fixture: a server reset to its start-up state.

    - ``webhook_url``: ``https://127.0.0.1:PORT/rest/USER/CODE/`` for the portal's first webhook (the official
      SDKs only speak HTTPS); ``domain`` (``127.0.0.1:PORT``) and ``webhook_token`` (``USER/CODE``) are the same
      webhook split the way ``b24pysdk.BitrixWebhook`` takes it.
    - ``ca_bundle``: the server's certificate (PEM). While the test runs, ``REQUESTS_CA_BUNDLE`` and
      ``SSL_CERT_FILE`` name a bundle of the system's certificates plus this one (ini ``crmchat_trust_env =
      false`` turns that off).
    - ``control``: the control API (:class:`pytest_crmchat.Control`).
    - ``base_url`` / ``http_url``: the HTTPS and HTTP listeners; ``oauth_token_url``: its ``/oauth/token/``.
    """

    def __init__(self, server: CrmchatServer):
        self.server = server
        assert server.control is not None
        self.control: Control = server.control
        self.base_url = server.https_url
        self.http_url = server.http_url
        self.ca_bundle = server.ca_bundle

    @property
    def domain(self) -> str:
        return self.base_url.split("://", 1)[1]

    @property
    def webhook_token(self) -> str:
        user, code = self.server.webhook
        return f"{user}/{code}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/rest/{self.webhook_token}/"

    @property
    def oauth_token_url(self) -> str:
        return f"{self.base_url}/oauth/token/"

    def __repr__(self) -> str:
        return f"<crmchat {self.base_url}>"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crmchat", "crmchat test server")
    group.addoption("--crmchat-fixture", help="portal state file (JSON or YAML) the crmchat server starts with")
    group.addoption("--crmchat-bin", help="the crmchat binary (default: $CRMCHAT_BIN, else crmchat on PATH)")
    parser.addini("crmchat_fixture", "portal state file (JSON or YAML) crmchat starts with, relative to the ini "
                  "file (default: the built-in demo portal)", default="")
    parser.addini("crmchat_args", "more arguments for `crmchat serve`", type="args", default=[])
    parser.addini("crmchat_startup_timeout", "seconds to wait for crmchat to become ready", default="30")
    parser.addini("crmchat_trust_env", "point REQUESTS_CA_BUNDLE and SSL_CERT_FILE at crmchat's certificate "
                  "(plus the system's) during each test using `crmchat`", type="bool", default=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "crmchat_fixture(path): the tests it marks get a crmchat server of their own started with this portal "
        "file (relative to the test file); one server per file for the whole session",
    )


class _ServerPool:
    """The session's servers, one per portal file, started on first use and stopped at the end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.servers: Dict[Optional[Path], CrmchatServer] = {}
        self.failures: Dict[Optional[Path], BaseException] = {}

    def default_fixture(self) -> Optional[Path]:
        option = self.config.getoption("crmchat_fixture")
        if option:
            return Path(option).resolve()
        value = self.config.getini("crmchat_fixture")
        if value:
            base = self.config.inipath.parent if self.config.inipath else self.config.rootpath
            return (base / value).resolve()
        return None

    def get(self, fixture: Optional[Path]) -> CrmchatServer:
        if fixture in self.failures:  # fail each test fast, with the first error, instead of retrying
            raise self.failures[fixture]
        server = self.servers.get(fixture)
        if server is None:
            server = CrmchatServer(
                fixture,
                binary=self.config.getoption("crmchat_bin"),
                args=self.config.getini("crmchat_args"),
                startup_timeout=float(self.config.getini("crmchat_startup_timeout")),
            )
            try:
                server.start()
            except BaseException as e:
                self.failures[fixture] = e
                raise
            self.servers[fixture] = server
        return server

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()


@pytest.fixture(scope="session")
def _crmchat_pool(pytestconfig: pytest.Config) -> Iterator[_ServerPool]:
    pool = _ServerPool(pytestconfig)
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(scope="session")
def crmchat_server(_crmchat_pool: _ServerPool) -> CrmchatServer:
    """The session's crmchat server (``crmchat serve`` on free ports, control API on, ready): the portal
    file from ``--crmchat-fixture`` or the ini option ``crmchat_fixture``, else the demo portal."""
    return _crmchat_pool.get(_crmchat_pool.default_fixture())


@pytest.fixture
def crmchat(request: pytest.FixtureRequest, _crmchat_pool: _ServerPool) -> Iterator[Crmchat]:
    """A crmchat reset to its start-up state before the test (see :class:`Crmchat`)."""
    marker = request.node.get_closest_marker("crmchat_fixture")
    if marker is not None:
        if not marker.args:
            raise pytest.UsageError("crmchat_fixture needs the portal file: @pytest.mark.crmchat_fixture('portal.json')")
        server = _crmchat_pool.get((Path(request.node.path).parent / marker.args[0]).resolve())
    else:
        server = request.getfixturevalue("crmchat_server")
    if not server.running:
        pytest.fail(f"the crmchat server has exited:\n{server.log()}")
    server.control.reset()
    handle = Crmchat(server)
    with pytest.MonkeyPatch.context() as patch:
        if request.config.getini("crmchat_trust_env"):
            assert server.data_dir is not None
            bundle = server.data_dir / "ca-bundle.pem"
            path = str(bundle) if bundle.exists() else combined_ca_bundle(server.ca_bundle, server.data_dir)
            patch.setenv("REQUESTS_CA_BUNDLE", path)
            patch.setenv("SSL_CERT_FILE", path)
        yield handle


@pytest.fixture
def event_sink() -> Iterator[EventSink]:
    """A local HTTP handler collecting event deliveries (``event_sink.url``), parsed with PHP's rules."""
    sink = EventSink()
    try:
        yield sink
    finally:
        sink.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test that used ``crmchat`` shows the REST calls crmchat received during it."""
    outcome = yield
    report = outcome.get_result()
    handle = getattr(item, "funcargs", {}).get("crmchat")
    if report.when != "call" or not report.failed or not isinstance(handle, Crmchat):
        return
    try:
        entries = handle.control.requests(limit=30)
    except Exception as e:  # the server may be the thing that broke
        report.sections.append(("crmchat requests", f"(could not read the journal: {e})"))
        return
    lines = [
        f"#{e.get('id')} {e.get('http_method')} {e.get('method')} -> {e.get('status')}"
        + (f" {e['error']}" if e.get("error") else "")
        + (f" (fault {e['fault']})" if e.get("fault") else "")
        for e in entries
    ]
    report.sections.append(("crmchat requests", "\n".join(lines) or "(none)"))

"""The fixtures themselves: the server they start, reset between tests, the CA bundle, the marker, cleanup."""

import json
import os
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from pytest_crmchat import ControlError, CrmchatServer, CrmchatStartError


def get_json(url, **kwargs):
    with urllib.request.urlopen(url, timeout=10, **kwargs) as response:
        return json.load(response)


def test_the_webhook_answers_over_https_trusting_ca_bundle(crmchat):
    context = ssl.create_default_context(cafile=crmchat.ca_bundle)
    answer = get_json(crmchat.webhook_url + "imopenlines.crm.chat.getLastId.json?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288",
                      context=context)
    assert answer["result"] == 8773
    assert crmchat.webhook_url.startswith("https://127.0.0.1:")
    assert crmchat.webhook_url.endswith("/rest/1/demowebhookcode1/")


def test_the_system_bundle_in_the_environment_trusts_crmchat_too(crmchat):
    # REQUESTS_CA_BUNDLE / SSL_CERT_FILE name the system's certificates plus crmchat's.
    bundle = Path(os.environ["REQUESTS_CA_BUNDLE"]).read_text()
    assert Path(crmchat.ca_bundle).read_text().strip() in bundle
    assert bundle.count("BEGIN CERTIFICATE") > 1
    answer = get_json(crmchat.webhook_url + "imopenlines.crm.chat.getLastId.json?CRM_ENTITY_TYPE=deal&CRM_ENTITY=288",
                      context=ssl.create_default_context())
    assert answer["result"] == 8773


def test_reset_before_each_test_part_1_changes_the_portal(crmchat):
    crmchat.control.load({"users": [{"id": 77, "name": "Temporary"}]})
    assert 77 in [u["id"] for u in crmchat.control.state()["users"]]
    crmchat.control.fault("server.time", "ERROR_CORE")


def test_reset_before_each_test_part_2_sees_the_start_up_state(crmchat):
    state = crmchat.control.state()
    assert 77 not in [u["id"] for u in state["users"]]
    assert crmchat.control.faults() == []
    assert crmchat.control.requests().total == 0


def test_the_control_api_needs_the_token(crmchat_server):
    request = urllib.request.Request(crmchat_server.http_url + "/_crmchat/state",
                                     headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401


def test_state_validation_problems_are_reported(crmchat):
    with pytest.raises(ControlError) as refused:
        crmchat.control.load({"chats": [{"id": 1, "line": 1, "connector": "livechat", "members": [999]}]})
    assert refused.value.status == 400
    assert refused.value.error == "invalid_state"
    assert refused.value.problems


def test_snapshots_and_the_clock(crmchat):
    control = crmchat.control
    control.load({"users": [{"id": 78, "name": "Snap"}]})
    control.snapshot("with-78")
    control.reset()
    assert 78 not in [u["id"] for u in control.state()["users"]]
    control.restore("with-78")
    assert 78 in [u["id"] for u in control.state()["users"]]
    assert "with-78" in [s["name"] for s in control.snapshots()]
    control.delete_snapshot("with-78")

    before = control.clock()["offset_s"]
    control.advance_clock(3600)
    assert control.clock()["offset_s"] >= before + 3600


@pytest.mark.crmchat_fixture("portal.json")
def test_a_marker_starts_a_server_with_another_portal(crmchat, crmchat_server):
    assert crmchat.server is not crmchat_server
    assert crmchat.webhook_url.endswith("/rest/1/markerwebhookcode1/")
    assert crmchat.control.state()["portal"]["domain"] == "marker.example"
    answer = get_json(crmchat.webhook_url + "imopenlines.crm.chat.getLastId.json?CRM_ENTITY_TYPE=lead&CRM_ENTITY=5",
                      context=ssl.create_default_context(cafile=crmchat.ca_bundle))
    assert answer["result"] == 40


def test_a_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CRMCHAT_BIN", str(tmp_path / "no-such-crmchat"))
    with pytest.raises(CrmchatStartError, match="CRMCHAT_BIN"):
        CrmchatServer().start()


@pytest.mark.starts_server
def test_a_server_that_cannot_start_is_reported_and_leaves_nothing(tmp_path):
    with pytest.raises(CrmchatStartError, match="does not exist"):
        CrmchatServer(tmp_path / "missing.json").start()
    bad = tmp_path / "bad.json"
    bad.write_text('{"users": [{"id": 1}], "nonsense": true}')
    server = CrmchatServer(bad)
    with pytest.raises(CrmchatStartError) as failed:
        server.start()
    assert "nonsense" in str(failed.value)  # the server's own explanation is in the message
    assert server.process is None and server.data_dir is None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (reaped later by its parent).
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.starts_server
def test_stop_ends_the_process_and_removes_its_data():
    with CrmchatServer() as server:
        pid, data_dir = server.pid, server.data_dir
        assert pid_alive(pid) and data_dir.exists()
    assert not pid_alive(pid)
    assert not data_dir.exists()


@pytest.mark.starts_server
@pytest.mark.parametrize("how", ["failing-test", "killed-pytest"])
def test_no_server_is_left_behind(how, tmp_path):
    """A session whose test fails, or whose pytest is killed outright, leaves no crmchat running."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import os, signal, ssl, urllib.request
        def test_inner(crmchat):
            print("SERVER_PID", crmchat.server.pid, flush=True)
            if os.environ["HOW"] == "killed-pytest":
                os.kill(os.getpid(), signal.SIGKILL)
            urllib.request.urlopen(crmchat.webhook_url + "server.time.json", context=ssl.create_default_context())
            assert False, "this test fails on purpose"
    """))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env={**os.environ, "HOW": how}, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode != 0
    lines = [line for line in run.stdout.splitlines() if line.startswith("SERVER_PID ")]
    assert lines, run.stdout + run.stderr
    pid = int(lines[0].split()[1])
    for _ in range(100):
        if not pid_alive(pid):
            break
        time.sleep(0.05)
    assert not pid_alive(pid), f"crmchat {pid} is still running after the {how} session"
    if how == "failing-test":  # the failure report lists what crmchat received during the test
        assert "crmchat requests" in run.stdout and "server.time -> 200" in run.stdout, run.stdout

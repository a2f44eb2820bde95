import pytest

# Parts of crmchat these tests use are being built on other branches. Until each is on main, the tests that
# need it say so (naming what is missing) instead of passing.
MISSING = {
    "control": "needs the control API (--control-token, /readyz, /_crmchat/*), not on main yet",
    "events": "needs event.bind, event.test and ONAPPINSTALL deliveries (the events work), not on main yet",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "starts_server: the test starts a crmchat itself")
    config.addinivalue_line("markers", "needs_events: the test needs crmchat's event deliveries")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("needs_events") and "events" in MISSING:
            item.add_marker(pytest.mark.skip(reason=MISSING["events"]))
        elif ({"crmchat", "crmchat_server"} & set(item.fixturenames) or item.get_closest_marker("starts_server")) \
                and "control" in MISSING:
            item.add_marker(pytest.mark.skip(reason=MISSING["control"]))

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "starts_server: the test starts a crmchat itself")
    config.addinivalue_line("markers", "needs_events: the test needs crmchat's event deliveries")

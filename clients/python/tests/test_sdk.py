"""The official Python SDK (b24pysdk) through the fixtures: its retry on a rate-limit fault, its token refresh
after the clock passed an access token's expiry."""

import time

import pytest
from b24pysdk import BitrixApp, BitrixToken, BitrixWebhook, Client
from b24pysdk.api.requesters.bitrix_oauth_requester import BitrixOAuthRequester
from b24pysdk.errors import BitrixAPIQueryLimitExceeded

DELETE = "imopenlines.crm.chat.user.delete"


def webhook_client(crmchat, **options):
    return Client(BitrixWebhook(domain=crmchat.domain, webhook_token=crmchat.webhook_token), **options)


def test_the_sdk_retries_a_query_limit_fault_and_then_succeeds(crmchat):
    rule = crmchat.control.fault(DELETE, "QUERY_LIMIT_EXCEEDED", times=2)
    started = time.monotonic()

    # b24pysdk tries three times, sleeping 1 s and then 2 s: the third attempt gets through.
    assert webhook_client(crmchat).imopenlines.crm.chat.user.delete("deal", 288, 12).result == 8773

    assert time.monotonic() - started >= 3.0
    calls = crmchat.control.requests(method=DELETE)
    assert [(c["status"], c["error"], c.get("fault")) for c in calls] == [
        (503, "QUERY_LIMIT_EXCEEDED", rule),
        (503, "QUERY_LIMIT_EXCEEDED", rule),
        (200, None, None),
    ]
    assert crmchat.control.faults() == []  # `times` ran out: the rule is gone


def test_a_fault_that_outlasts_the_retries_fails_the_call_and_changes_nothing(crmchat):
    crmchat.control.fault(DELETE, "QUERY_LIMIT_EXCEEDED")
    with pytest.raises(BitrixAPIQueryLimitExceeded):
        webhook_client(crmchat).imopenlines.crm.chat.user.delete("deal", 288, 12).result
    assert len(crmchat.control.requests(method=DELETE)) == 3

    crmchat.control.clear_faults()  # user 12 is still in the chat: the faulted calls changed nothing
    assert webhook_client(crmchat).imopenlines.crm.chat.user.delete("deal", 288, 12).result == 8773


def test_the_sdk_refreshes_a_token_the_clock_made_expire(crmchat, monkeypatch):
    installed = crmchat.control.install_app("local.demo.app", user_id=1)
    # b24pysdk refreshes at the vendor's OAuth server; in a test that is crmchat's /oauth/token/.
    monkeypatch.setattr(BitrixOAuthRequester, "_OAUTH_TOKEN_URL", crmchat.oauth_token_url)
    token = BitrixToken(
        domain=crmchat.domain,
        auth_token=installed["access_token"],
        refresh_token=installed["refresh_token"],
        bitrix_app=BitrixApp(client_id="local.demo.app", client_secret="demo-secret"),
    )
    chats = Client(token).imopenlines.crm.chat
    assert chats.get_last_id("deal", 288).result == 8773

    crmchat.control.advance_clock(installed["expires_in"] + 1)

    assert chats.get_last_id("deal", 288).result == 8773
    assert token.auth_token != installed["access_token"]
    assert token.refresh_token != installed["refresh_token"]
    calls = crmchat.control.requests(method="imopenlines.crm.chat.getlastid")
    assert [(c["status"], c["error"]) for c in calls] == [(200, None), (401, "expired_token"), (200, None)]
    assert all(c["auth"]["type"] == "oauth" for c in calls)

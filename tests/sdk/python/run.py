"""crmchat through the official Python SDK (b24pysdk), over an inbound webhook and HTTPS.

Needs a fresh `crmchat serve --demo` (deal 288, chat 8773 with members 12, 14, 20, 30; run.mjs may have run
before: it leaves 12, 14, 20) and:
  CRMCHAT_HTTPS_BASE      https://localhost:PORT
  CRMCHAT_WEBHOOK_USER    1
  CRMCHAT_WEBHOOK_CODE    demowebhookcode1
  REQUESTS_CA_BUNDLE      crmchat's certificate (the SDK verifies TLS like any `requests` client)
Prints PASS/FAIL per scenario; exits 1 when any fails.
"""

import os
import sys
import traceback
from urllib.parse import urlsplit

from b24pysdk import BitrixWebhook, Client
from b24pysdk.errors import BitrixAPIBadRequest

CHAT = 8773
DEAL = ("deal", 288)

base = urlsplit(os.environ["CRMCHAT_HTTPS_BASE"])
assert base.scheme == "https", "the SDK only speaks https"
token = BitrixWebhook(
    domain=base.netloc,  # host:port; the SDK builds https://{domain}/rest/...
    webhook_token=f"{os.environ['CRMCHAT_WEBHOOK_USER']}/{os.environ['CRMCHAT_WEBHOOK_CODE']}",
)
# No retries: a failure should show at once, not after the SDK's backoff.
client = Client(token, max_retries=1)
users = client.imopenlines.crm.chat.user


def remove_user():
    result = users.delete(*DEAL, 12).result
    assert result == CHAT and type(result) is int, f"result: {result!r}"


def remove_again_is_user_not_found():
    try:
        result = users.delete(*DEAL, 12).result
    except BitrixAPIBadRequest as e:
        assert e.status_code == 400, e.status_code
        assert e.error == "USER_NOT_FOUND", e.error
        assert e.error_description == "The specified user is not in chat.", e.error_description
    else:
        raise AssertionError(f"no error, result {result!r}")


def batch_add_delete_get_last_id():
    batch = client.call_batch({
        "add": users.add(*DEAL, 12),
        "delete": users.delete(*DEAL, 20),
        "last": client.imopenlines.crm.chat.get_last_id(*DEAL),
    }).result
    assert not batch.result_error, f"result_error: {batch.result_error!r}"
    assert batch.result == {"add": CHAT, "delete": CHAT, "last": CHAT}, f"result: {batch.result!r}"
    assert set(batch.result_time) == {"add", "delete", "last"}, f"result_time: {batch.result_time!r}"


def list_chats():
    chats = client.imopenlines.crm.chat.get(*DEAL).result
    expected = [{"CHAT_ID": str(CHAT), "CONNECTOR_ID": "livechat", "CONNECTOR_TITLE": "Online chat"}]
    assert chats == expected, f"result: {chats!r}"


failed = 0
for scenario in (remove_user, remove_again_is_user_not_found, batch_add_delete_get_last_id, list_chats):
    try:
        scenario()
        print(f"PASS python {scenario.__name__}", flush=True)
    except Exception:
        failed += 1
        print(f"FAIL python {scenario.__name__}\n{traceback.format_exc()}", flush=True)
sys.exit(1 if failed else 0)

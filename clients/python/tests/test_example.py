from b24pysdk import BitrixWebhook, Client
from b24pysdk.errors import BitrixAPIBadRequest
import pytest


def test_remove_a_user_from_a_deal_chat(crmchat):
    client = Client(BitrixWebhook(domain=crmchat.domain, webhook_token=crmchat.webhook_token))
    users = client.imopenlines.crm.chat.user

    # The demo portal: deal 288 has chat 8773, and operator 12 is in it.
    assert users.delete("deal", 288, 12).result == 8773

    # Removing them again is the vendor's error, raised by the SDK as it would be on Bitrix24.
    with pytest.raises(BitrixAPIBadRequest) as refused:
        users.delete("deal", 288, 12).result
    assert refused.value.error == "USER_NOT_FOUND"

    # What the code under test sent, as crmchat received it.
    calls = crmchat.control.requests(method="imopenlines.crm.chat.user.delete")
    assert [call["status"] for call in calls] == [200, 400]
    assert calls[0]["params"]["USER_ID"] == 12


def test_every_test_starts_from_the_same_portal(crmchat):
    # The test above removed user 12, and crmchat was reset since.
    client = Client(BitrixWebhook(domain=crmchat.domain, webhook_token=crmchat.webhook_token))
    assert client.imopenlines.crm.chat.user.delete("deal", 288, 12).result == 8773

"""pytest fixtures for crmchat, the self-hosted Bitrix24 REST server for Open Channel CRM chats.

``pip install ./clients/python`` registers the plugin (``-p crmchat`` is not needed); see its README.
"""

from .control import Control, ControlError, RequestLog
from .phpquery import PhpArray, parse_php_query
from .plugin import Crmchat
from .server import CrmchatServer, CrmchatStartError, find_binary
from .sink import Delivery, EventSink

__all__ = [
    "Control",
    "ControlError",
    "Crmchat",
    "CrmchatServer",
    "CrmchatStartError",
    "Delivery",
    "EventSink",
    "PhpArray",
    "RequestLog",
    "find_binary",
    "parse_php_query",
]

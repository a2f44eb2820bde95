"""event_sink: its parser against PHP's own parse_str, fake deliveries posted by the test, real ones from crmchat."""

import json
import os
import random
import shutil
import subprocess
import urllib.request
from urllib.parse import quote

import pytest

from pytest_crmchat import parse_php_query

PHP = shutil.which("php")
needs_php = pytest.mark.skipif(
    PHP is None and os.environ.get("CI") != "true",
    reason="php-cli is not installed (apt-get install php-cli): the comparison with PHP's parse_str is skipped",
)

# PHP's view of parse_str's result, keys with their types: arrays as {"a": [[key, value], ...]}.
PHP_DUMP = r"""
function enc($v) { if (!is_array($v)) return $v; $o = []; foreach ($v as $k => $x) $o[] = [$k, enc($x)]; return ['a' => $o]; }
$out = [];
foreach (json_decode(stream_get_contents(STDIN)) as $q) { parse_str($q, $r); $out[] = enc($r); }
echo json_encode($out);
"""


def dump(value):
    if isinstance(value, dict):
        return {"a": [[k, dump(v)] for k, v in value.items()]}
    return value


def php_parse_all(queries):
    run = subprocess.run([PHP or "php", "-d", "error_reporting=0", "-r", PHP_DUMP], input=json.dumps(queries),
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(run.stdout)


EDGE_CASES = [
    "event=ONCRMCHATUSERDELETE&data[CHAT_ID]=8773&auth[domain]=crmchat.localhost",
    "data%5BCHAT_ID%5D=8773&data%5BUSER_ID%5D=12",
    "a[b.c=1", "a[b c[d=1", "a.b[c.d]=1", "a b=1", " a=1", "+a=1", "a[ b]=1&a[ ]=2", "a[b]x=1", "a]b=1",
    "a[-5]=1&a[]=2", "a[05]=1&a[5]=2&a[]=3", "a[9223372036854775807]=1&a[]=2", "b[9223372036854775808]=1",
    "c[-0]=1&d[1e3]=2&e[+1]=3", "a=1&a[b]=2", "a[b]=2&a=1", "a%00b=1&c=x%00y", "a&b=1&&c", "a[b][=1", "a[=1",
    "=1&[]=2&[a]=3", "a[][]=1&a[][]=2", "a[x][]=1&a[x][]=2&a[y]=3", "a=%zz&b=%4&c=%41%42", "a[]=1&a[]=2&a[x]=3&a[]=4",
    "x=1&a" + "[b]" * 64 + "=1", "x=1&a[b]=1&a" + "[b]" * 65 + "=1", "&".join(f"v{i}=1" for i in range(1005)),
    "data[DATA][0][chat][id]=5&data[DATA][0][message][text]=%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82+%26+bye",
]


def random_queries(count, seed=1234):
    rng = random.Random(seed)
    atoms = ["a", "b", "0", "1", "-1", "01", " ", ".", "[", "]", "[]", "%5B", "%5D", "+", "%20", "%00", "x.y", "é"]

    def key():
        return "".join(rng.choice(atoms) for _ in range(rng.randint(1, 6)))

    def value():
        return quote("".join(rng.choice(atoms) for _ in range(rng.randint(0, 3))), safe="")

    return ["&".join(f"{key()}={value()}" if rng.random() < 0.9 else key() for _ in range(rng.randint(1, 5)))
            for _ in range(count)]


@needs_php
def test_the_parser_agrees_with_php_parse_str():
    queries = EDGE_CASES + random_queries(3000)
    expected = php_parse_all(queries)
    for query, php in zip(queries, expected):
        assert dump(parse_php_query(query)) == php, f"differs from PHP for {query!r}"


def test_a_delivery_posted_to_the_sink_is_parsed_like_post_in_php(event_sink):
    body = ("event=ONCRMCHATUSERDELETE&event_handler_id=7&data%5BCHAT_ID%5D=8773&data%5BUSER_ID%5D=12"
            "&data%5BCRM_ENTITY_TYPE%5D=DEAL&ts=1796279202&auth%5Baccess_token%5D=abc"
            "&auth%5Bdomain%5D=crmchat.localhost&auth%5Bapplication_token%5D=t0k")
    request = urllib.request.Request(event_sink.url + "handler", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200

    [delivery] = event_sink.wait("ONCRMCHATUSERDELETE")
    assert delivery.path == "/handler"
    assert delivery.data == {"CHAT_ID": "8773", "USER_ID": "12", "CRM_ENTITY_TYPE": "DEAL"}
    assert delivery.auth["application_token"] == "t0k"
    assert delivery.ts == 1796279202


def test_the_sink_answers_what_it_is_told(event_sink):
    event_sink.answer(503)
    request = urllib.request.Request(event_sink.url, data=b"event=ONAPPTEST", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 503
    assert event_sink.events("onapptest")[0].event == "ONAPPTEST"
    with pytest.raises(TimeoutError, match="1 of 2"):
        event_sink.wait("ONAPPTEST", count=2, timeout=0.2)


@pytest.mark.needs_events
def test_crmchat_delivers_onapptest_to_the_sink(crmchat, event_sink):
    installed = crmchat.control.install_app("local.demo.app", user_id=1)
    endpoint = installed["client_endpoint"]
    call = lambda method, params: json.load(urllib.request.urlopen(urllib.request.Request(
        f"{crmchat.http_url}/rest/{method}.json",
        data=json.dumps({"auth": installed["access_token"], **params}).encode(),
        headers={"Content-Type": "application/json"}), timeout=10))
    assert endpoint
    assert call("event.bind", {"event": "ONAPPTEST", "handler": event_sink.url})["result"] is True
    assert call("event.test", {"any": "thing"})["result"] == 1

    [delivery] = event_sink.wait("ONAPPTEST")
    assert delivery.content_type.startswith("application/x-www-form-urlencoded")
    assert delivery.data["QUERY"]["any"] == "thing"
    assert delivery.auth["application_token"] == "demo-app-token"
    if PHP:  # a PHP handler's $_POST is what the sink parsed
        assert dump(delivery.form) == php_parse_all([delivery.body.decode()])[0]
    # the token in the delivery works for calling back
    assert call("imopenlines.crm.chat.getLastId", {"CRM_ENTITY_TYPE": "deal", "CRM_ENTITY": 288,
                                                    "auth": delivery.auth["access_token"]})["result"] == 8773


@pytest.mark.needs_events
def test_install_app_with_a_handler_delivers_onappinstall(crmchat, event_sink):
    installed = crmchat.control.install_app("local.demo.app", user_id=1, handler=event_sink.url)
    [delivery] = event_sink.wait("ONAPPINSTALL")
    assert delivery.data["ACTIVE"] == "Y" and delivery.data["INSTALLED"] == "Y"
    assert delivery.auth["application_token"] == installed["application_token"]
    assert delivery.auth["refresh_token"]  # ONAPPINSTALL is one of the events that carry it

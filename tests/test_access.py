"""Access to the server (access.py): the keys file as untrusted input, the limiter's sliding
window, and a server started with --api-keys and --cors (403, 429, CORS headers, the
LibreTranslate settings endpoint)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers_cli import assert_one_line_error, invoke
from test_serve import Server, request
from tinytrans.access import FAILED_PER_MINUTE, WINDOW, Limiter, Refused, client, read_api_keys
from tinytrans.config import ServeConfig
from tinytrans.errors import UserError

SECRET = "s3cret-key"


def keys_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_keys_file_gives_each_key_its_limit(tmp_path):
    path = keys_file(tmp_path, f"\ufeff{SECRET}\t2\n# operator's keys\n\nother-key\t100\n")
    assert read_api_keys(path) == {SECRET: 2, "other-key": 100}  # the byte-order mark is not a key


@pytest.mark.parametrize("text, cause", [
    (f"{SECRET} 5\n", ":1: expected KEY<TAB>"),
    (f"{SECRET}\t0\n", ":1: requests per minute"),
    (f"{SECRET}\tmany\n", ":1: requests per minute"),
    (f"{SECRET}\t²\n", ":1: requests per minute"),
    (f"another-key\t1\n{SECRET}\t1\n{SECRET}\t2\n", ":3: this key is listed twice"),
    (f"{'k' * 201}\t1\n", ":1: a key is 8 to 200"),
    ("short\t1\n", ":1: a key is 8 to 200"),
    ("# nothing\n", "lists no key"),
])
def test_a_bad_keys_file_is_one_line_that_never_shows_a_key(tmp_path, text, cause):
    with pytest.raises(UserError, match=cause) as caught:
        read_api_keys(keys_file(tmp_path, text))
    assert SECRET not in str(caught.value)


def test_a_keys_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "keys.tsv"
    path.write_bytes(SECRET.encode() + b"\t1\n\xff\t1\n")
    with pytest.raises(UserError, match=":2: not valid UTF-8"):
        read_api_keys(path)


def test_too_many_keys_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("tinytrans.access.MAX_KEYS", 2)
    text = "".join(f"key-number-{i}\t1\n" for i in range(3))
    with pytest.raises(UserError, match="more than 2 keys"):
        read_api_keys(keys_file(tmp_path, text))


def test_the_limiter_refuses_missing_and_unknown_keys_and_counts_a_minute_per_key():
    now = [0.0]
    limiter = Limiter({SECRET: 2}, clock=lambda: now[0])
    for key, status in ((None, 403), ("", 403), ("guess", 403), (5, 403)):
        with pytest.raises(Refused) as caught:
            limiter.admit(key, "1.2.3.4")
        assert caught.value.status == status and "guess" not in str(caught.value)
    limiter.admit(SECRET, "1.2.3.4")
    limiter.admit(SECRET, "5.6.7.8")  # a key's limit holds wherever it comes from
    with pytest.raises(Refused) as caught:
        limiter.admit(SECRET, "1.2.3.4")
    assert caught.value.status == 429
    now[0] = WINDOW + 0.1  # the first two have left the window
    limiter.admit(SECRET, "1.2.3.4")


def test_wrong_keys_count_against_their_address():
    limiter = Limiter({SECRET: 1000}, clock=lambda: 0.0)
    statuses = []
    for _ in range(FAILED_PER_MINUTE + 1):
        with pytest.raises(Refused) as caught:
            limiter.admit("guess-guess", "2001:db8::1")
        statuses.append(caught.value.status)
    assert statuses == [403] * FAILED_PER_MINUTE + [429]
    with pytest.raises(Refused) as caught:  # the same /64: the same client
        limiter.admit("guess-guess", "2001:db8::ffff")
    assert caught.value.status == 429
    limiter.admit(SECRET, "2001:db8::1")  # a right key still gets in


def test_without_keys_each_address_has_its_own_limit_and_the_longest_unused_are_forgotten(monkeypatch):
    now = [0.0]
    limiter = Limiter(None, per_address=1, clock=lambda: now[0])
    limiter.admit(None, "a")
    limiter.admit(None, "b")
    with pytest.raises(Refused, match="at most 1 requests a minute"):
        limiter.admit(None, "a")
    monkeypatch.setattr("tinytrans.access.MAX_IDENTITIES", 2)
    limiter.admit(None, "c")  # a third identity: the longest unused, b (a was just refused), goes
    assert list(limiter.recent) == ["address a", "address c"]
    Limiter(None, per_address=0).admit(None, "a")  # no limit at all


@pytest.mark.parametrize("origins, cause", [(("example.org",), "--cors"),
                                            (("https://example.org/page",), "no path")])
def test_cors_origins_are_checked(origins, cause):
    with pytest.raises(UserError, match=cause):
        ServeConfig(cors=origins)
    with pytest.raises(UserError, match="--req-limit"):
        ServeConfig(req_limit=-1)


def test_serve_refuses_a_bad_keys_file_before_loading_the_model(tmp_path, varied_run):
    result = invoke("serve", "--model", varied_run, "--api-keys", keys_file(tmp_path, "x\n"))
    assert_one_line_error(result, 2, "keys.tsv:1", "expected KEY<TAB>")


@pytest.fixture(scope="module")
def guarded(varied_run, tmp_path_factory):
    keys = keys_file(tmp_path_factory.mktemp("keys"), f"{SECRET}\t3\n")
    running = Server(varied_run, "--api-keys", str(keys), "--cors", "https://app.example")
    yield running
    assert running.stop() == 0, "".join(running.stderr)


def ask(server: Server, **fields) -> tuple[int, dict]:
    body = {"q": "A man.", "source": "en", "target": "de", **fields}
    return request(server.url + "/translate", json.dumps(body).encode())


def test_an_ipv6_client_is_its_64_network():
    assert client("2001:db8:1:2:3::9") == "2001:db8:1:2::/64"
    assert client("192.0.2.7") == "192.0.2.7" and client("unknown") == "unknown"


def test_keys_are_required_limited_and_never_logged(guarded):
    assert ask(guarded)[0] == 403
    status, answer = ask(guarded, api_key="guess")
    assert status == 403 and answer == {"error": "Invalid API key"}
    assert request(guarded.url + "/detect", json.dumps({"q": "A man."}).encode())[0] == 403
    assert [ask(guarded, api_key=SECRET)[0] for _ in range(2)] == [200, 200]
    form = urllib.parse.urlencode({"q": "A man.", "source": "en", "target": "de"}).encode()
    status, _ = request(guarded.url + f"/translate?api_key={SECRET}", form,
                        "application/x-www-form-urlencoded")
    assert status == 200  # a form client may send its key in the query string
    status, answer = ask(guarded, api_key=SECRET)
    assert status == 429 and "3 requests a minute" in answer["error"]
    assert SECRET not in "".join(guarded.stderr)


def test_settings_say_a_key_is_required(guarded):
    status, settings = request(guarded.url + "/frontend/settings")
    assert status == 200 and settings["keyRequired"] is True
    assert settings["language"]["source"]["code"] == "en" and settings["charLimit"] == 10_000


def test_pages_of_the_named_origin_may_read_the_answers(guarded):
    preflight = urllib.request.Request(guarded.url + "/translate", method="OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Content-Type"})
    with urllib.request.urlopen(preflight, timeout=60) as reply:
        assert reply.headers["Access-Control-Allow-Origin"] == "https://app.example"
    for origin, allowed in (("https://app.example", "https://app.example"),
                            ("https://other.example", None)):
        plain = urllib.request.Request(guarded.url + "/languages", headers={"Origin": origin})
        with urllib.request.urlopen(plain, timeout=60) as reply:
            assert reply.headers.get("Access-Control-Allow-Origin") == allowed

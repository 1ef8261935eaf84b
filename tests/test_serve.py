"""`tinytrans serve`, as clients meet it: a real server process on a free loopback port, real HTTP.

LibreTranslate's requests and answers, tinytrans' extra fields, every bad input as a 4xx with a
one-line {"error": ...}, many clients at once each getting exactly its own lines, and a SIGTERM
that lets the request in flight finish before the process exits 0.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (starlette, uvicorn) is not installed")

from tinytrans.config import SearchConfig, ServeConfig  # noqa: E402
from tinytrans.errors import UserError  # noqa: E402
from tinytrans.translate import LineOptions, Translator  # noqa: E402
from toyrun import BUNDLED  # noqa: E402

LINES = (BUNDLED / "test.en").read_text(encoding="utf-8").splitlines()[:40]
START_TIMEOUT = 120  # seconds: importing torch and loading a model on a busy 2-core machine


class Server:
    """`tinytrans serve` in a child process; `url` once it listens."""

    def __init__(self, run_dir: Path, *flags: str):
        precision = [] if "--engine" in flags else ["--precision", "fp32"]  # CT2: the export's
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tinytrans", "serve", "--model", str(run_dir), "--port", "0",
             *precision, "--device", "cpu", "--threads", "1", *flags],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.stderr: list[str] = []
        self.url = self._wait_for_address()
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.stderr.append(line)
            found = re.search(r"http://127\.0\.0\.1:\d+", line)
            if found:
                return found[0]
        self.process.kill()
        raise RuntimeError("the server did not start: " + "".join(self.stderr))

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def request(url: str, body: bytes | None = None, content_type: str = "application/json",
            method: str | None = None) -> tuple[int, object]:
    """(status, parsed JSON body) of one HTTP request."""
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def translate(server: Server, **fields) -> tuple[int, dict]:
    fields.setdefault("source", "en")
    fields.setdefault("target", "de")
    return request(server.url + "/translate", json.dumps(fields).encode())


@pytest.fixture(scope="module")
def run_dir(varied_run: Path) -> Path:
    return varied_run


@pytest.fixture(scope="module")
def server(run_dir: Path):
    running = Server(run_dir, "--max-chars", "3000", "--max-lines", "50", "--max-body", "20000")
    yield running
    assert running.stop() == 0, "".join(running.stderr)


@pytest.fixture(scope="module")
def translator(run_dir: Path) -> Translator:
    return Translator(run_dir, precision="fp32", device="cpu")


def expected(translator: Translator, lines: list[str], **search) -> list[str]:
    return [t.text for t in translator.translate(lines, SearchConfig(**search))]


# ---------------------------------------------------------------------------------------------
# LibreTranslate's API


def test_health_and_languages(server):
    status, health = request(server.url + "/health")
    assert status == 200 and health["status"] == "ok"
    status, languages = request(server.url + "/languages")
    assert status == 200
    assert {"code": "en", "name": "English", "targets": ["de"]} in languages


def test_a_string_in_a_string_out(server, translator):
    status, answer = translate(server, q=LINES[0])
    assert status == 200
    assert answer == {"translatedText": expected(translator, LINES[:1])[0]}


def test_a_list_in_a_list_out_in_order(server, translator):
    status, answer = translate(server, q=LINES[:8] + [""])
    assert status == 200
    assert answer["translatedText"] == expected(translator, LINES[:8]) + [""]


def test_lines_inside_a_text_come_back_as_lines(server, translator):
    status, answer = translate(server, q=f"{LINES[0]}\n\n{LINES[1]}")
    assert status == 200
    first, second = expected(translator, LINES[:2])
    assert answer["translatedText"] == f"{first}\n\n{second}"


def test_a_form_request_as_libretranslate_accepts(server, translator):
    body = urllib.parse.urlencode({"q": LINES[2], "source": "auto", "target": "de",
                                   "api_key": "ignored"}).encode()
    status, answer = request(server.url + "/translate", body, "application/x-www-form-urlencoded")
    assert status == 200
    assert answer["translatedText"] == expected(translator, LINES[2:3])[0]
    assert answer["detectedLanguage"] == {"language": "en", "confidence": 100.0}


def test_alternatives_are_the_nbest_after_the_best(server, translator):
    status, answer = translate(server, q=LINES[3], alternatives=2, beam=3)
    assert status == 200
    [nbest] = [t.nbest for t in translator.translate(LINES[3:4], SearchConfig(beam=3, nbest=3))]
    assert answer["translatedText"] == nbest[0][1]
    assert answer["alternatives"] == [text for _, text in nbest[1:]]


def test_alignment_and_attention_extras(server, translator):
    status, answer = translate(server, q=[LINES[4], LINES[5]], alignment=True, attention=True)
    assert status == 200
    aligned = list(translator.translate(LINES[4:6], SearchConfig(), options=LineOptions(alignment=True)))
    assert answer["alignment"] == [" ".join(f"{s}-{t}" for s, t in a.alignments[0]) for a in aligned]
    first = answer["attention"][0][0]
    assert set(first) == {"source", "target", "target_inputs", "translation", "weights"}
    assert first["translation"] == answer["translatedText"][0]
    cross = first["weights"]["cross"]  # [layer][head][row][column]
    assert len(cross[0][0]) == len(first["target"]) and len(cross[0][0][0]) == len(first["source"])
    assert all(abs(sum(row) - 1) < 1e-3 for row in cross[0][0])


def test_detect_and_source_auto_name_each_items_language(server):
    status, answer = request(server.url + "/detect", json.dumps({"q": "Ein Mann geht mit dem Hund."}).encode())
    assert status == 200 and answer[0]["language"] == "de" and 0 < answer[0]["confidence"] <= 100
    status, answer = request(server.url + "/detect", json.dumps({"q": ["A man.", "Ein Mann."]}).encode())
    assert status == 200 and [a[0]["language"] for a in answer] == ["en", "de"]
    status, answer = translate(server, q=["A man is walking.", "Ein Mann geht."], source="auto")
    assert status == 200 and [d["language"] for d in answer["detectedLanguage"]] == ["en", "de"]
    status, answer = request(server.url + "/detect", json.dumps({"q": 5}).encode())
    assert status == 400 and "q: must be" in answer["error"]
    status, answer = request(server.url + "/detect",
                             json.dumps({"q": "x" * 3001}).encode())
    assert status == 400 and "3,001 characters" in answer["error"]
    status, answer = request(server.url + "/detect", json.dumps({"q": [""] * 51}).encode())
    assert status == 400 and "51 items" in answer["error"]  # empty items cost work too


def test_html_items_come_back_as_documents_with_their_tags(server, translator):
    pages = ["<p>A man <b>rides</b> a bike.</p>\n<p>Two\ndogs.</p>", "<i>Hello</i>"]
    status, answer = translate(server, q=pages, format="html", beam=2)
    assert status == 200, answer
    from tinytrans.config import SearchConfig
    assert answer["translatedText"] == list(translator.translate_markup(pages,
                                                                        SearchConfig(beam=2)))
    assert answer["translatedText"][0].count("<b>") == 1 and "\n" in answer["translatedText"][0]


def test_a_prefix_begins_the_translation_of_its_item(server, translator):
    status, answer = translate(server, q=LINES[0], prefix="Zwei Hunde")
    assert status == 200
    assert answer["translatedText"] == [t.text for t in translator.translate(
        LINES[:1], SearchConfig(), prefixes=["Zwei Hunde"])][0]
    assert answer["translatedText"].startswith("Zwei Hunde")
    status, answer = translate(server, q=[LINES[1], f"{LINES[2]}\n{LINES[3]}"],
                               prefix=["", "Ein Mann"])
    assert status == 200
    first, (second, third) = answer["translatedText"][0], answer["translatedText"][1].split("\n")
    assert first == expected(translator, LINES[1:2])[0]
    assert second.startswith("Ein Mann") and third == expected(translator, LINES[3:4])[0]
    status, answer = translate(server, q=LINES[0], prefix="Zwei Hunde", attention=True)
    assert status == 200 and answer["attention"][0]["translation"] == answer["translatedText"]
    status, answer = translate(server, q=f"\n{LINES[1]}", prefix="Zwei Hunde")
    assert status == 200  # the item's first line with text gets its prefix
    assert answer["translatedText"].split("\n")[1].startswith("Zwei Hunde")
    body = urllib.parse.urlencode([("q", LINES[2]), ("q", LINES[3]), ("prefix", "Ein Mann"),
                                   ("prefix", ""), ("source", "en"), ("target", "de")]).encode()
    status, answer = request(server.url + "/translate", body, "application/x-www-form-urlencoded")
    assert status == 200 and answer["translatedText"][0].startswith("Ein Mann")
    assert answer["translatedText"][1] == expected(translator, LINES[3:4])[0]


def test_attention_of_a_line_too_long_for_the_model_is_refused(server):
    long_line = " ".join(["house"] * 200)  # translated in pieces: no one set of weights
    status, answer = translate(server, q=long_line, attention=True)
    assert status == 400 and "longer than the model's" in answer["error"]
    status, answer = translate(server, q=long_line)
    assert status == 200 and answer["translatedText"]


# ---------------------------------------------------------------------------------------------
# Bad requests: a 4xx with one line


BAD = [
    (b'{"q": "a", "source": "en", "target": ', "application/json", 400, "invalid JSON"),
    (b'["a"]', "application/json", 400, "must be a JSON object"),
    (b'{"q": 5, "source": "en", "target": "de"}', "application/json", 400, "q: must be a string"),
    (b'{"q": ["a", 5], "source": "en", "target": "de"}', "application/json", 400, "q: must be"),
    (b'{"q": "  ", "source": "en", "target": "de"}', "application/json", 400, "q: empty"),
    (b'{"q": [], "source": "en", "target": "de"}', "application/json", 400, "q: an empty list"),
    (b'{"source": "en", "target": "de"}', "application/json", 400, "q: missing"),
    (b'{"q": "a", "target": "de"}', "application/json", 400, "source: missing"),
    (b'{"q": "a", "source": "fr", "target": "de"}', "application/json", 400, "translates en to de"),
    (b'{"q": "a", "source": "en", "target": "cs"}', "application/json", 400, "translates en to de"),
    (b'{"q": "a", "source": "en", "target": "de", "format": "pdf"}', "application/json", 400,
     "format: 'pdf' must be one of text, html"),
    (b'{"q": "a", "source": "en", "target": "de", "format": "html", "alignment": true}',
     "application/json", 400, "alignment: not with format 'html'"),
    (b'{"q": "a", "source": "en", "target": "de", "beam": 0}', "application/json", 400, "beam: 0"),
    (b'{"q": "a", "source": "en", "target": "de", "beam": "x"}', "application/json", 400, "beam"),
    (b'{"q": "a", "source": "en", "target": "de", "alternatives": 99}', "application/json", 400,
     "alternatives: 99"),
    (b'{"q": "a", "source": "en", "target": "de", "alignment": "maybe"}', "application/json", 400,
     "alignment"),
    (b'{"q": "a", "source": "en", "target": "de", "prefix": ["b"]}', "application/json", 400,
     "prefix: ['b'] must be a string"),
    (b'{"q": ["a", "b"], "source": "en", "target": "de", "prefix": ["b"]}', "application/json",
     400, "prefix: 1 items, but q has 2"),
    (b'{"q": ["a"], "source": "en", "target": "de", "prefix": "b"}', "application/json",
     400, "prefix: 'b' must be a list of strings"),
    (json.dumps({"q": "a" * 1001, "prefix": "x" * 2000, "source": "en", "target": "de"}).encode(),
     "application/json", 400, "prefixes included"),
    (b'{"q": "a", "source": "en", "target": "de", "beam": "\xc2\xb2"}', "application/json", 400,
     "beam"),  # a superscript two: a digit to str.isdigit, not to int()
    (b"alternatives=--1&q=a&source=en&target=de", "application/x-www-form-urlencoded", 400,
     "alternatives"),
    (b"[" * 15000, "application/json", 400, "invalid JSON"),
    (b'{"q": "a", "source": "en", "target": "de", "beam": ' + b"1" * 5000 + b"}",
     "application/json", 400, "invalid JSON"),
    (b'{"q": "a\\udc80", "source": "en", "target": "de"}', "application/json", 400,
     "lone surrogate"),
    (b'{"q": "a", "source": "\\udc80", "target": "de"}', "application/json", 400,
     "lone surrogate"),
    (b'{"q": "\xff\xfe", "source": "en", "target": "de"}', "application/json", 400, "UTF-8"),
    (json.dumps({"q": "x" * 3001, "source": "en", "target": "de"}).encode(), "application/json",
     400, "3,001 characters"),
    (json.dumps({"q": ["x"] * 51, "source": "en", "target": "de"}).encode(), "application/json",
     400, "51 lines"),
    (b'{"q": "' + b"x" * 30000 + b'"}', "application/json", 413, "body"),
]


@pytest.mark.parametrize("body, content_type, status, cause", BAD,
                         ids=[b[3] for b in BAD])
def test_bad_requests_are_one_line_errors(server, body, content_type, status, cause):
    got, answer = request(server.url + "/translate", body, content_type)
    assert got == status
    assert list(answer) == ["error"] and "\n" not in answer["error"]
    assert cause in answer["error"]


@pytest.mark.parametrize("path, method, status", [("/nope", "GET", 404), ("/translate", "GET", 405),
                                                  ("/health", "POST", 405)])
def test_unknown_routes_and_methods(server, path, method, status):
    got, answer = request(server.url + path, b"" if method == "POST" else None, method=method)
    assert got == status and list(answer) == ["error"]


def test_the_server_survives_every_bad_request(server, translator):
    for body, content_type, _, _ in BAD:
        request(server.url + "/translate", body, content_type)
    status, answer = translate(server, q=LINES[6])
    assert status == 200 and answer["translatedText"] == expected(translator, LINES[6:7])[0]


# ---------------------------------------------------------------------------------------------
# Many clients


def test_concurrent_clients_each_get_their_own_lines(server, translator):
    wanted = dict(zip(LINES, expected(translator, LINES)))
    _, before = request(server.url + "/health")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda line: translate(server, q=line), LINES * 2))
    for line, (status, answer) in zip(LINES * 2, answers):
        assert status == 200 and answer["translatedText"] == wanted[line]
    _, after = request(server.url + "/health")
    assert after["batches"] - before["batches"] < len(LINES) * 2  # some requests shared a batch


@pytest.mark.slow  # a server (or a browser) of its own
def test_a_full_queue_says_429_and_the_server_goes_on(run_dir, translator):
    server = Server(run_dir, "--queue", "1")
    try:
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda _: translate(server, q=LINES[:30]), range(12)))
        statuses = [status for status, _ in replies]
        assert 429 in statuses and 200 in statuses
        for status, answer in replies:
            if status == 429:
                assert "retry later" in answer["error"]
            else:
                assert answer["translatedText"] == expected(translator, LINES[:30])
    finally:
        assert server.stop() == 0


@pytest.mark.slow  # a server (or a browser) of its own
def test_sigterm_finishes_the_request_in_flight_then_exits_0(run_dir):
    server = Server(run_dir)
    result = {}
    client = threading.Thread(target=lambda: result.update(
        reply=translate(server, q=LINES * 4, beam=5)))
    client.start()
    deadline = time.monotonic() + 60
    while request(server.url + "/health")[1]["translating"] == 0:  # not yet in flight
        assert time.monotonic() < deadline and client.is_alive()
        time.sleep(0.01)
    code = server.stop()
    client.join(timeout=60)
    assert code == 0, "".join(server.stderr)
    status, answer = result["reply"]
    assert status == 200 and len(answer["translatedText"]) == len(LINES) * 4


# ---------------------------------------------------------------------------------------------
# A server fit for a network: connections bounded in number and time, clients that leave


def raw_connection(url: str) -> socket.socket:
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def wait_for_log(server: Server, text: str, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [line for line in server.stderr if text in line]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the server's log: {''.join(server.stderr)}")


@pytest.mark.slow  # a server of its own
def test_idle_trickling_and_surplus_connections_are_closed(run_dir):
    server = Server(run_dir, "--request-timeout", "0.3", "--max-connections", "3")
    try:
        idle = raw_connection(server.url)  # sends nothing
        trickling = raw_connection(server.url)  # a byte of its head every 0.3 s
        start = time.monotonic()
        for byte in b"GET /health HTTP/1.1\r\n":
            trickling.send(bytes([byte]))
            # wait for the next byte's turn, or for the answer: once it is there, sending more
            # to a closed connection would make the client's kernel drop it (a reset)
            if select.select([trickling], [], [], 0.3)[0] or time.monotonic() - start > 4:
                break
        # its 408 may be lost: a byte that crossed the close makes the server's kernel reset
        # the connection, and the reset discards what the client had not read yet
        try:
            assert read_until_closed(trickling).startswith(b"HTTP/1.1 408")
        except ConnectionResetError:
            pass  # closed all the same, which is the point
        assert read_until_closed(idle).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < 8  # 0.3 s each, not forever
        # three open at once at most: a fourth is answered 503 and closed
        held = [raw_connection(server.url) for _ in range(3)]
        time.sleep(0.2)
        surplus = raw_connection(server.url)
        assert read_until_closed(surplus).startswith(b"HTTP/1.1 503")
        for sock in held + [idle, trickling, surplus]:
            sock.close()
        time.sleep(0.3)
        assert request(server.url + "/health")[0] == 200  # and the server goes on
        # a request that is whole is never timed out, however long its translation takes
        # (urllib says Connection: close, which h11 counts as a state of its own)
        start = time.monotonic()
        status, answer = translate(server, q=LINES * 5, beam=16)
        assert status == 200 and len(answer["translatedText"]) == len(LINES) * 5
        slow = time.monotonic() - start
    finally:
        assert server.stop() == 0, "".join(server.stderr)
    assert "Traceback" not in "".join(server.stderr)
    assert slow > 0.3, "the translation was too quick to show that a whole request is not timed"


def test_a_client_that_leaves_mid_body_is_one_line_in_the_log(server, translator):
    sock = raw_connection(server.url)
    sock.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"q\": \"A man")
    time.sleep(0.3)
    sock.close()
    line = wait_for_log(server, "the connection closed after")
    assert "bytes of the request's body" in line
    log = "".join(server.stderr)
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert translate(server, q=LINES[0])[1]["translatedText"] == expected(translator, LINES[:1])[0]


def test_a_host_on_the_network_is_warned_about():
    from tinytrans.serve import is_loopback
    assert all(map(is_loopback, ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.5", "example.org"]))


# ---------------------------------------------------------------------------------------------
# The page, in a real browser


@pytest.mark.slow  # a server (or a browser) of its own
def test_the_page_translates_as_you_type_and_draws_the_attention(server, translator):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium, driver_path = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not (chromium.exists() and driver_path.exists()):
        pytest.skip("Chromium and ChromeDriver are not installed (Debian: chromium, chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        browser.get(server.url + "/")
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "pair").text)
        assert browser.find_element(By.ID, "pair").text == "en \u2192 de"
        browser.find_element(By.ID, "source").send_keys(LINES[7])
        wanted = expected(translator, LINES[7:8])[0]
        WebDriverWait(browser, 30).until(
            lambda b: b.find_element(By.ID, "translation").text == wanted)
        _, answer = translate(server, q=LINES[7], attention=True)
        attention = answer["attention"][0]
        rows = browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr")
        assert len(rows) == len(attention["target"])
        cells = rows[0].find_elements(By.CSS_SELECTOR, "td")
        assert len(cells) == len(attention["source"])
        Select(browser.find_element(By.ID, "layer")).select_by_value("0")
        Select(browser.find_element(By.ID, "head")).select_by_value("0")
        cells = browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr:first-child td")
        shown = [float(c.get_attribute("data-weight")) for c in cells]
        assert shown == pytest.approx(attention["weights"]["cross"][0][0][0], abs=1e-5)
        if os.environ.get("TINYTRANS_SCREENSHOT"):  # for the README's picture
            browser.save_screenshot(os.environ["TINYTRANS_SCREENSHOT"])
        # formatted text: the toggle sends format html, and the tags come back
        page = f"<p>{LINES[3]} <b>{LINES[4]}</b></p>"
        browser.find_element(By.ID, "markup").click()
        source = browser.find_element(By.ID, "source")
        source.clear()
        source.send_keys(page)
        wanted = list(translator.translate_markup([page], SearchConfig(beam=ServeConfig.beam)))[0]
        WebDriverWait(browser, 30).until(
            lambda b: b.find_element(By.ID, "translation").text == wanted)
        # a file: uploaded to /translate_file, a link to its translation
        upload = Path(tempfile.mkdtemp()) / "lines.txt"
        upload.write_text("\n".join(LINES[:3]) + "\n")
        browser.find_element(By.ID, "file").send_keys(str(upload))
        WebDriverWait(browser, 60).until(
            lambda b: b.find_element(By.ID, "download").is_displayed())
        link = browser.find_element(By.ID, "download").get_attribute("href")
        with urllib.request.urlopen(link, timeout=60) as reply:
            assert reply.read().decode().split("\n")[:3] == expected(translator, LINES[:3])
    finally:
        browser.quit()


# ---------------------------------------------------------------------------------------------
# The CTranslate2 engine behind the same server


@pytest.mark.slow  # a server (or a browser) of its own
def test_the_ctranslate2_engine_serves_the_same_api(run_dir, tmp_path_factory):
    pytest.importorskip("ctranslate2", reason="the export extra (ctranslate2) is not installed")
    from tinytrans.ct2engine import CT2Translator
    from tinytrans.export import export_ctranslate2

    exported = export_ctranslate2(run_dir, tmp_path_factory.mktemp("serve-ct2") / "model")
    server = Server(exported, "--engine", "ctranslate2")
    try:
        wanted = [t.text for t in CT2Translator(exported, threads=1).translate(
            LINES[:6], SearchConfig())]
        status, answer = translate(server, q=LINES[:6])
        assert status == 200 and answer["translatedText"] == wanted
        _, health = request(server.url + "/health")
        assert health["engine"] == "CT2Translator"
        status, answer = translate(server, q=LINES[0], attention=True)
        assert status == 400 and "--engine torch" in answer["error"]
        status, answer = translate(server, q=LINES[0], alignment=True)
        assert status == 400 and "no alignments" in answer["error"]
    finally:
        assert server.stop() == 0


def test_serve_leaves_the_event_loop_a_core_unless_told(monkeypatch):
    import torch

    from tinytrans import cli
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert cli._serving_threads(None) == 3 and cli._serving_threads(4) == 4
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert cli._serving_threads(None) == 1  # one core: the model still gets it
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cli._serving_threads(None) is None  # the user's choice, left to PyTorch


def test_a_run_without_an_identifier_answers_its_source_language_for_auto(run_dir):
    import asyncio

    from tinytrans.serve import Routes
    old_run = Translator(run_dir, precision="fp32", device="cpu")
    old_run.model_dir = None  # as a run made before identifiers: nothing to read
    routes = Routes(old_run, None, ServeConfig(), lambda line: None)
    assert asyncio.run(routes.detected_for_auto(["Ein Mann.", "x"])) == \
        [{"language": "en", "confidence": 100.0}] * 2
    with pytest.raises(UserError, match="detect: this model has no language identifier"):
        routes.detected(["Ein Mann."])  # what POST /detect answers with a 400


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "tinytrans-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def test_a_file_round_trips_through_translate_file_and_download_file(server, translator):
    srt = b"1\n00:00:01,000 --> 00:00:02,000\nA man rides\na bike.\n\n2\n00:00:03,000 --> " \
          b"00:00:04,000\nHello.\n"
    body, kind = multipart({"source": "en", "target": "de"}, "../../etc/film.srt", srt)
    status, answer = request(server.url + "/translate_file", body, kind)
    assert status == 200, answer
    url = answer["translatedFileUrl"]
    assert url.startswith(server.url + "/download_file/") and url.endswith(".film.srt")
    with urllib.request.urlopen(url, timeout=60) as reply:
        got = reply.read().decode()
        assert 'filename="' in reply.headers["Content-Disposition"]
    from tinytrans.documents import parse_srt
    cues, _ = parse_srt(got, "download")
    assert [(c.number, c.timing, len(c.lines)) for c in cues] == \
        [("1", "00:00:01,000 --> 00:00:02,000", 2), ("2", "00:00:03,000 --> 00:00:04,000", 1)]
    text_body, kind = multipart({"source": "en", "target": "de"}, "a.txt", b"A man.\r\nHello.\n")
    status, answer = request(server.url + "/translate_file", text_body, kind)
    with urllib.request.urlopen(answer["translatedFileUrl"], timeout=60) as reply:
        lines = reply.read().decode().split("\n")
    assert lines[0].endswith("\r") and lines[-1] == "" and len(lines) == 3
    for bad in ("/download_file/..%2F..%2Fetc%2Fpasswd", "/download_file/" + "0" * 32 + ".x.srt"):
        assert request(server.url + bad)[0] == 404
    status, answer = request(server.url + "/translate_file", *multipart({"source": "en",
                                                                        "target": "de"},
                                                                       "x.pdf", b"%PDF"))
    assert status == 400 and "x.pdf" in answer["error"]
    status, answer = request(server.url + "/translate_file", b"{}", "application/json")
    assert status == 400 and "multipart/form-data" in answer["error"]
    status, settings = request(server.url + "/frontend/settings")
    assert settings["filesTranslation"] is True and ".srt" in settings["supportedFilesFormat"]

"""The web app through a real uvicorn server on loopback: REST API, limits, queue, docs and UI page."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
import uvicorn
from conftest import TINY_LABELS, tiny_config

from acousticsense.bundle import DEFAULT_BUNDLE, read_config
from acousticsense.inference import Classifier, Genre, Result, Window
from acousticsense.model_card import model_card
from acousticsense.serve import create_app
from acousticsense.ui import Example, is_not_music, summary_text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def url(tiny_bundle) -> Iterator[str]:
    with running(create_app(tiny_bundle, max_seconds=5)) as base:
        yield base


@pytest.fixture(scope="module")
def clip_bytes(clip_mp3) -> bytes:
    return clip_mp3.read_bytes()


def classify(url: str, data: bytes, name: str = "clip.mp3", **params) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/classify", files={"file": (name, data)}, params=params, timeout=60)


def test_classify_returns_the_predict_json_schema(url, clip_bytes):
    r = classify(url, clip_bytes, top_k=3)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["source"] == "clip.mp3" and doc["model_id"] == "tiny-test"
    assert doc["duration"] == pytest.approx(5.0)  # the 7 s clip, analysed up to max_seconds
    assert [w["code"] for w in doc["warnings"]] == ["truncated"]
    assert len(doc["top_k"]) == 3 and {g["label"] for g in doc["top_k"]} <= set(TINY_LABELS)
    probs = [g["probability"] for g in doc["top_k"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    starts = [w["start"] for w in doc["timeline"]]
    assert starts == [0.0, 1.0, 2.0, 3.0]  # 2 s windows every 1 s over 5 s
    assert all(sum(w["probabilities"].values()) == pytest.approx(1, abs=1e-4) for w in doc["timeline"])
    assert set(doc) == {"source", "model_id", "duration", "top_k", "timeline", "silent", "aggregation", "warnings"}


def test_window_and_hop_parameters(url, clip_bytes):
    doc = classify(url, clip_bytes, hop=0.5).json()
    assert [w["start"] for w in doc["timeline"]][:3] == [0.0, 0.5, 1.0] and "window_override" not in str(doc["warnings"])
    r = classify(url, clip_bytes, window=1.5)  # the bundle owns the window length
    assert r.status_code == 400 and "window" in r.json()["detail"]
    doc = classify(url, clip_bytes, window=1.5, hop=0.5, override_window="true").json()
    assert doc["timeline"][0]["end"] == 1.5 and "window_override" in [w["code"] for w in doc["warnings"]]


@pytest.mark.parametrize("params", [{"window": "inf", "override_window": "true"}, {"window": "1e9", "override_window": "true"},
                                    {"hop": "0.00001"}, {"hop": "-1"}, {"hop": "nan"}, {"top_k": "0"}, {"top_k": "two"}])  # fmt: skip
def test_a_bad_option_gets_400_with_one_line(url, clip_bytes, params):
    r = classify(url, clip_bytes, **params)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert set(r.json()) == {"detail"} and detail and "\n" not in detail


def test_bad_input_gets_a_one_line_422(url, clip_bytes):
    r = classify(url, b"this is a text file, not audio\n", name="notes.txt")
    assert r.status_code == 422
    assert r.json()["detail"].startswith("notes.txt: not a readable audio file") and "\n" not in r.json()["detail"]
    r = classify(url, clip_bytes, top_k=0)
    assert r.status_code == 400 and r.json() == {"detail": "top_k must be a whole number of at least 1, not 0"}  # the CLI's words
    r = classify(url, clip_bytes, hop="nan")
    assert r.status_code == 400 and r.json() == {"detail": "hop must be a number from 0.1 to 3600 s, not nan"}
    r = httpx.post(f"{url}/api/v1/classify", data={"x": "1"})
    assert r.status_code == 422 and r.json() == {"detail": "file: missing: POST the audio as the form field 'file' of a multipart/form-data upload (curl -F file=@song.mp3)"}
    r = httpx.post(f"{url}/api/v1/classify", files={"audio": ("a.mp3", clip_bytes)})  # another field name: the same answer
    assert r.status_code == 422 and r.json()["detail"].startswith("file: missing: POST the audio as the form field 'file'")
    r = httpx.post(f"{url}/api/v1/classify", data={"file": "hello"})  # text, not a file: was "Expected UploadFile, received: <class 'str'>"
    assert r.status_code == 422 and r.json() == {"detail": "file: send the audio as a file upload (multipart/form-data)"}
    r = classify(url, clip_bytes, genre="Jazz")  # a genre means nothing without explain: not silently ignored
    assert r.status_code == 400 and r.json() == {"detail": "genre: only used with explain=true (the genre to explain)"}
    for route in ("classify", "explain.png"):  # two files: not just the last one analysed
        r = httpx.post(f"{url}/api/v1/{route}", files=[("file", ("a.wav", clip_bytes)), ("file", ("b.wav", clip_bytes))], timeout=60)
        assert r.status_code == 400 and r.json() == {"detail": "file: send one file per request (this one has several)"}
    r = httpx.post(f"{url}/api/v1/classify", data={"top_k": "1", "x" * 500: "1"}, files={"file": ("a.wav", clip_bytes)}, timeout=60)
    assert r.status_code == 400 and r.json() == {"detail": f"top_k, {'x' * 40!r}…: not a form field of /api/v1/classify (the form carries only "
                                                          "'file'; options go in the query string, e.g. ?top_k=3)"}  # not the default 5, silently
    r = httpx.post(f"{url}/api/v1/classify?top_k=2&hop=2&top_k=3", files={"file": ("a.wav", clip_bytes)}, timeout=60)  # not a silent choice
    assert r.status_code == 400 and r.json() == {"detail": "top_k: given more than once; give each option once"}
    r = httpx.post(f"{url}/api/v1/classify?topk=1", files={"file": ("a.wav", clip_bytes)}, timeout=60)  # a typo: not the defaults, silently
    assert r.status_code == 400 and r.json() == {"detail": "topk: not an option of /api/v1/classify (it takes explain, genre, hop, override_window, top_k, window)"}
    assert httpx.get(f"{url}/api/v1/health?verbose=1").status_code == 400
    for method, route in (("GET", "classify"), ("PUT", "explain.png"), ("HEAD", "classify"), ("OPTIONS", "explain.png")):  # were the page's 404
        r = httpx.request(method, f"{url}/api/v1/{route}")
        assert r.status_code == 405 and r.headers["allow"] == "POST", method
        assert method == "HEAD" or "POST the audio as the form field 'file'" in r.json()["detail"]
    for route in ("health", "model"):  # GET routes: HEAD answers, other methods are 405 (were the page's 404)
        assert httpx.head(f"{url}/api/v1/{route}").status_code == 200
        r = httpx.post(f"{url}/api/v1/{route}")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD" and r.json() == {"detail": "POST is not allowed here: use GET or HEAD"}


def test_an_unexpected_failure_is_a_422_and_one_log_line(url, clip_bytes, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(Classifier, "classify", broken)
    r = classify(url, clip_bytes, name="song.mp3")
    assert r.status_code == 422 and r.json() == {"detail": "song.mp3: could not be analysed (RuntimeError: boom second line)"}
    [record] = [r for r in caplog.records if "song.mp3" in r.getMessage()]
    assert record.getMessage() == "song.mp3: could not be analysed (RuntimeError: boom second line)" and record.exc_info is None


def test_health_and_model(url):
    assert httpx.get(f"{url}/api/v1/health").json() == {"status": "ok", "model_id": "tiny-test", "busy": 0, "capacity": 33}
    model = httpx.get(f"{url}/api/v1/model").json()
    assert model["labels"] == TINY_LABELS
    assert model["preprocessing"]["window_seconds"] == 2.0
    assert model["provenance"] == {"trained_on": "nothing (random weights for tests)"}
    assert model["metrics"] == {}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_their_assets_from_this_server(url, page):
    html = httpx.get(f"{url}{page}")
    assert html.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: *["']([^"']+)["']""", html.text)
    assets = [a or b for a, b in assets]
    assert any(a.endswith(".js") for a in assets)
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), f"{page} loads {asset} from elsewhere"
        assert httpx.get(f"{url}{asset}").status_code == 200, asset


def test_the_api_runs_without_gradio():
    code = "import sys, acousticsense.api; assert 'gradio' not in sys.modules, 'gradio imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_docs_and_ui_page(url):
    docs = httpx.get(f"{url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/api/v1/classify", "/api/v1/health", "/api/v1/model"} <= set(paths)
    for route in ("/api/v1/classify", "/api/v1/explain.png"):  # every answer an upload can get is documented
        assert {"200", "400", "408", "413", "422", "503"} <= set(paths[route]["post"]["responses"]), route
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "gradio" in page.text.lower()


async def _post_many(url: str, data: bytes, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as client:
        return await asyncio.gather(*(client.post(f"{url}/api/v1/classify", files={"file": ("clip.mp3", data)}) for _ in range(n)))


def test_20_concurrent_requests_are_all_answered(url, clip_bytes):
    responses = asyncio.run(_post_many(url, clip_bytes, 20))
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["top_k"][0]["label"] for r in responses}) == 1  # same input, same answer


def test_a_full_queue_answers_503(tiny_bundle, clip_bytes):
    with running(create_app(tiny_bundle, max_queue=0)) as base:
        answers = asyncio.run(_post_many(base, clip_bytes, 20))
        codes = [r.status_code for r in answers]
        assert set(codes) == {200, 503} and codes.count(200) >= 1
        assert all(r.headers["retry-after"] == "2" for r in answers if r.status_code == 503)  # when to try again
        r = httpx.get(f"{base}/api/v1/health").json()
        assert (r["busy"], r["capacity"]) == (0, 1)


def test_a_request_whose_client_hung_up_is_not_analysed(tiny_bundle, clip_bytes):
    """Clients that leave while their upload waits for the model free their place: nothing is analysed for nobody
    (33 abandoned uploads had kept the queue full and the model busy). An unknown genre is refused before the queue."""
    app = create_app(tiny_bundle)
    engine = app.state.engine
    calls = []
    real = engine.classifier.classify
    engine.classifier.classify = lambda *a, **k: calls.append(1) or real(*a, **k)
    with running(app) as base:
        engine._slots.acquire()  # the model is busy
        try:
            for _ in range(3):
                with pytest.raises(httpx.TimeoutException):
                    httpx.post(f"{base}/api/v1/classify", files={"file": ("clip.mp3", clip_bytes)}, timeout=1)
            assert httpx.get(f"{base}/api/v1/health").json()["busy"] == 3
            start = time.monotonic()
            r = httpx.post(f"{base}/api/v1/explain.png", files={"file": ("clip.mp3", clip_bytes)}, params={"genre": "Polka" * 100}, timeout=5)
            assert r.status_code == 400 and time.monotonic() - start < 2  # not queued behind the model
            assert r.json()["detail"] == f"genre: unknown genre '{'Polka' * 12}'…; this model's genres: {', '.join(TINY_LABELS)}"
            time.sleep(0.6)  # the server notices the hang-ups
        finally:
            engine._slots.release()
        deadline = time.monotonic() + 10
        while httpx.get(f"{base}/api/v1/health").json()["busy"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{base}/api/v1/health").json()["busy"] == 0 and calls == []
        assert classify(base, clip_bytes).status_code == 200 and calls == [1]


def test_oversized_uploads_get_413(tiny_bundle, clip_bytes):
    big = bytes(300_000)
    with running(create_app(tiny_bundle, max_upload_mb=0.1)) as base:
        r = classify(base, big)  # refused by its Content-Length
        assert r.status_code == 413 and r.json() == {"detail": "upload too large: the limit is 0.1 MiB"}

        def chunks() -> Iterator[bytes]:  # no Content-Length: the server has to count
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.mp3"\r\n\r\n'
            yield from (big[i : i + 65536] for i in range(0, len(big), 65536))
            yield b"\r\n--b--\r\n"

        r = httpx.post(f"{base}/api/v1/classify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.request.headers["transfer-encoding"] == "chunked"
        assert r.status_code == 413
        assert classify(base, clip_bytes[:90_000]).status_code == 200  # under the limit: fine


def test_model_card_speaks_in_words():
    config = read_config(DEFAULT_BUNDLE)
    held = config.metrics["held_out"]
    card = model_card(config)
    assert "is a Vision Transformer (`vit_mini_16`, 128×128-pixel pictures) that tells 16 genres apart: Blues," in card
    assert "It looks at 8-second windows, one every 4 s, and averages their probabilities for the whole track." in card
    assert ("**What it learned from:** 2,560 synthetic clips of 12 s in 16 genres, composed and rendered by this project, "
            "plus 360 clips of speech, noise and tones that are no genre.") in card
    assert "**When it is unsure:** its probabilities are calibrated" in card and "flagged as not music" in card
    assert f"**How well it does:** on 320 new synthetic clips that it never heard while learning, its first answer is right for {held['track_accuracy']:.1%}" in card
    assert "on real recordings, treat it as a demo" in card
    assert not re.search(r"synth_version|seed|manifest|/work/|lr |batch", card)  # no jargon, no build-machine paths
    bare = model_card(tiny_config())  # no training record: its provenance as it is
    assert "- trained_on: nothing (random weights for tests)" in bare and "**How well it does:** not measured" in bare
    assert "demo" not in bare
    for odd in ({"metrics": {"held_out": {"track_accuracy": "high"}}}, {"provenance": {"data": ["x"], "recipe": {"init": "x"}}}):
        card = model_card(replace(config, **odd))  # a hand-edited config.json: name and labels, never a crash
        assert card.startswith("### About the model\n**") and "16 genres apart: Blues," in card and "not shown" in card


def _result(windows: int, warnings: list[dict[str, str]] = ()) -> Result:
    timeline = [Window(i, i + 2.0, "Jazz", 0.9, False, {"Jazz": 0.9, "Blues": 0.1}) for i in range(windows)]
    return Result("take 1.mp3", "m", windows + 1.0, [Genre("Jazz", 0.9)], timeline, warnings=list(warnings))


def test_result_summary_names_the_file_counts_windows_and_reveals_an_examples_genre(tmp_path):
    one = summary_text(_result(1), None, builtin=False)
    assert one.startswith("**take 1.mp3**: 2.0 s analysed in 1 window.") and "demo" not in one
    warned = summary_text(_result(3, [{"code": "short_audio", "message": "clip is short"}]), Example("Example 2", tmp_path / "jazz.ogg", "Jazz"), builtin=True)
    assert "in 3 windows." in warned and "Example 2 was made as a **Jazz** piece." in warned
    assert "learned from synthetic music only" in warned and "- ⚠️ clip is short (`short_audio`)" in warned


def test_a_recording_flagged_not_music_names_no_genre():
    flagged = _result(2, [{"code": "not_music", "message": "this does not sound like music the model knows"}])
    text = summary_text(flagged, None, builtin=False)
    assert "it does not sound like music, so no genre is named" in text and "(`not_music`)" in text
    assert is_not_music(flagged) and not is_not_music(_result(2, [{"code": "low_confidence", "message": "unsure"}]))


def test_serve_on_a_port_in_use_is_one_error_line_before_the_model_loads(tiny_bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "acousticsense.cli", "serve", "--port", str(port), "--model", str(tiny_bundle)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and out.stderr == f"error: cannot listen on 127.0.0.1:{port} (Address already in use)\n"


def test_a_stalled_upload_is_let_go(tiny_bundle, monkeypatch):
    """A client that sends headers and a few bytes, then nothing, held its connection and partial upload for ever
    (uploads count towards --max-queue only once they have arrived): after UPLOAD_IDLE_SECONDS it gets 408."""
    from urllib.parse import urlsplit

    from acousticsense import api

    monkeypatch.setattr(api, "UPLOAD_IDLE_SECONDS", 1.0)
    with running(create_app(tiny_bundle, max_seconds=5)) as base:
        where = urlsplit(base)
        for route in ("/api/v1/classify", "/gradio_api/upload"):  # the page's uploads too
            with socket.create_connection((where.hostname, where.port), timeout=10) as s:
                s.sendall(f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                          "Content-Length: 100000\r\n\r\n--b\r\n".encode())
                start, answer = time.monotonic(), b""
                while b"}" not in answer and (more := s.recv(4096)):  # headers and the JSON body may come apart
                    answer += more
            answer = answer.decode(errors="replace")
            assert answer.startswith("HTTP/1.1 408") and "upload stalled: nothing arrived for 1 s" in answer, (route, answer)
            assert time.monotonic() - start < 5, route
        assert httpx.get(f"{base}/api/v1/health").status_code == 200


def test_a_malformed_form_is_a_400_and_no_log_noise(url, caplog):
    body = b"--garbage\r\n\r\n--garbage--\r\n"  # another boundary than the header's
    r = httpx.post(f"{url}/api/v1/classify", content=body, headers={"content-type": "multipart/form-data; boundary=--b"}, timeout=30)
    assert r.status_code in (400, 422) and "\n" not in r.json()["detail"]
    assert not [r for r in caplog.records if r.name.startswith("python_multipart")]  # its warning was an unprefixed line in the server log

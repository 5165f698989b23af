"""The Gradio page and the API docs in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from acousticsense.inference import Classifier
from acousticsense.serve import create_app
from acousticsense.ui import examples_in

from conftest import TINY_LABELS, music_like, write_audio
from test_serve import running

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(__file__).parent.parent / "artifacts"
TOP_GENRE = "#genres [data-testid=label-output-value]"
PLOTS = "#results img[src^='data:image/png']"
DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:::gradio.queueing"),  # gradio's own pandas deprecations
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (scripts/setup.sh installs it)"),
]


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("examples")
    for seed, name in enumerate(["jazz", "metal"]):
        write_audio(folder / f"{name}.ogg", music_like(4.0, 44100, seed=seed + 3, channels=2), 44100)
    return folder


@pytest.fixture(scope="module")
def url(tiny_bundle, examples) -> Iterator[str]:
    with running(create_app(tiny_bundle, examples_dir=examples)) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser, url: str, viewport: dict[str, int] = DESKTOP):
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(30_000)
    page.goto(url)
    page.get_by_text("About the model").wait_for()
    return page


@pytest.fixture
def page(browser, url):
    page = open_page(browser, url)
    yield page
    page.close()


def api_top_label(url: str, path: Path) -> str:
    r = httpx.post(f"{url}/api/v1/classify", files={"file": (path.name, path.read_bytes())}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["top_k"][0]["label"]


def upload(page, path: Path) -> None:
    """Put a file in the clip box, clearing what is there first (as a user would, with its ✕)."""
    clear = page.locator("#audio-in button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator("#audio-in input[type=file]").set_input_files(str(path))


def assert_no_results(page, message: str = "") -> None:
    page.locator(TOP_GENRE).wait_for(state="detached")
    assert page.locator(PLOTS).count() == 0
    assert page.locator("#summary [data-testid=markdown]").inner_text().strip() == message
    assert not page.locator("#download").is_visible()
    assert page.locator("#results").get_by_text("Error").filter(visible=True).count() == 0  # no error badges


def test_upload_and_classify_shows_the_api_top_genre(page, url, clip_mp3):
    upload(page, clip_mp3)
    page.click("#classify")
    top = page.locator(TOP_GENRE)
    top.wait_for()
    assert top.inner_text() == api_top_label(url, clip_mp3)
    page.locator("#summary").get_by_text("clip.mp3: 7.0 s analysed in 6 windows.").wait_for()
    assert "synthetic arrangements" not in page.locator("#summary").inner_text()  # not the built-in model
    assert page.locator(PLOTS).count() == 3  # spectrogram, timeline, and where the model looked
    assert page.locator("#relevance img").is_visible()
    with page.expect_download() as download:
        page.click("#download")
    doc = json.loads(Path(download.value.path()).read_text())
    assert doc["source"] == "clip.mp3" and doc["top_k"][0]["label"] == top.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser.png"), full_page=True)


def test_examples_are_neutral_and_classify_on_click(page, url, examples):
    clips = list(examples_in(examples, TINY_LABELS).values())
    assert [c.label for c in clips] == ["Example 1", "Example 2"]
    assert page.locator("button.gallery-item").all_inner_texts() == ["Example 1", "Example 2"]  # no genre, no file name
    assert ".ogg" not in page.locator("body").inner_text()
    page.get_by_text("Example 2", exact=True).click()  # no Classify press
    page.locator(TOP_GENRE).wait_for()
    assert page.locator(TOP_GENRE).inner_text() == api_top_label(url, clips[1].path)
    page.locator("#summary").get_by_text(f"Example 2 was made as a {clips[1].genre} piece.").wait_for()


def test_results_are_cleared_when_the_input_changes(page, examples, clip_mp3, monkeypatch):
    slow = Classifier.classify

    def slowly(*args, **kwargs):  # leaves time to see what the page shows while the next clip is analysed
        time.sleep(1.5)
        return slow(*args, **kwargs)

    monkeypatch.setattr(Classifier, "classify", slowly)
    clips = list(examples_in(examples, TINY_LABELS).values())
    page.get_by_text("Example 1", exact=True).click()
    page.locator("#summary").get_by_text(clips[0].path.name).wait_for()
    page.get_by_text("Example 2", exact=True).click()  # another example: the first one's results go at once
    assert_no_results(page)
    page.locator("#summary").get_by_text(clips[1].path.name).wait_for()
    assert page.locator(PLOTS).count() == 3  # spectrogram, timeline, relevance
    upload(page, clip_mp3)  # clearing the clip and uploading another
    assert_no_results(page)
    page.click("#audio-in button[aria-label=Clear]")
    assert_no_results(page)


def test_a_bad_file_shows_a_readable_message_and_no_stale_results(page, clip_mp3, tmp_path):
    upload(page, clip_mp3)
    page.click("#classify")
    page.locator(TOP_GENRE).wait_for()
    bad = tmp_path / "broken.mp3"
    bad.write_text("this is not audio\n" * 50)
    upload(page, bad)
    page.click("#classify")
    page.locator("#summary").get_by_text("broken.mp3: not a readable audio file").wait_for()  # where the result would be
    message = page.locator("#summary [data-testid=markdown]").inner_text().strip()
    assert message.startswith("⚠️ broken.mp3: not a readable audio file (") and "\n" not in message
    assert_no_results(page, message)
    assert "Traceback" not in page.locator("body").inner_text()


def test_user_errors_are_one_line_in_the_server_log(page, caplog):
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    page.click("#classify")
    page.locator("#summary").get_by_text("Upload or record a clip first.").wait_for()
    assert [r.getMessage() for r in caplog.records if "clip first" in r.getMessage()] == ["ui: Upload or record a clip first."]
    assert "Traceback" not in caplog.text


def test_warnings_are_shown_in_the_page(page, tmp_path):
    short = write_audio(tmp_path / "short.wav", music_like(1.0, 22050), 22050)
    upload(page, short)
    page.click("#classify")
    page.locator("#summary").get_by_text("short.wav: 1.0 s analysed in 1 window.").wait_for()  # "1 window", not "1 windows"
    assert "clip is 1.00 s, shorter than the 2 s window" in page.locator("#summary").inner_text()
    assert "(short_audio)" in page.locator("#summary").inner_text()


def test_the_api_panel_shows_a_curl_line_for_this_server(page, url):
    panel = page.locator("#api-help")
    panel.get_by_text(f"curl -F file=@song.mp3 {url}/api/v1/classify").wait_for()
    assert page.get_by_text("Use via API").count() == 1  # ours; Gradio's own panel (its internal endpoint) is off


def test_on_a_phone_the_results_follow_the_classify_button(browser, url, clip_mp3):
    page = open_page(browser, url, PHONE)
    try:
        upload(page, clip_mp3)
        page.click("#classify")
        page.locator(TOP_GENRE).wait_for()
        page.wait_for_function("() => { const t = document.getElementById('results').getBoundingClientRect().top; return t >= 0 && t < 200 }")
        # all three boxes in one instant: measured one after another, a smooth scroll still moving put results above the button
        boxes = page.evaluate("['#classify', '#results', '#model-card'].map(s => { const r = document.querySelector(s).getBoundingClientRect(); return [r.x, r.y] })")
        (classify_x, classify_y), (results_x, results_y), (_, card_y) = boxes
        assert classify_y < results_y < card_y
        assert results_x == pytest.approx(classify_x, abs=20)  # stacked, not side by side
        fonts = page.evaluate("[...document.querySelectorAll('#results img')].map(i => i.clientWidth / i.naturalWidth)")
        assert len(fonts) == 3 and min(fonts) > 0.6  # 12 pt plot labels stay at 11 px or more
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-phone.png"))
    finally:
        page.close()


def test_on_a_desktop_the_results_sit_beside_the_input(page, url):
    box = lambda sel: page.locator(sel).bounding_box()  # noqa: E731
    assert box("#results")["x"] > box("#audio-in")["x"] + box("#audio-in")["width"] - 1
    assert box("#results")["y"] < box("#classify")["y"] < box("#model-card")["y"]


@pytest.mark.parametrize("path, ready", [("/docs", ".swagger-ui .opblock"), ("/redoc", "[data-section-id] h2")])
def test_api_docs_render_offline(browser, url, path, ready):
    page = browser.new_page(viewport=DESKTOP)
    blocked: list[str] = []

    def local_only(route) -> None:
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            if route.request.resource_type != "image":  # ReDoc's "by Redocly" logo is the one remote image
                blocked.append(route.request.url)
            route.abort()

    try:
        page.route("**/*", local_only)
        page.goto(f"{url}{path}")
        page.locator(ready).first.wait_for(timeout=30_000)
        assert page.get_by_text("/api/v1/classify").count() >= 1
        assert blocked == []
    finally:
        page.close()


def test_the_library_tab_searches_finds_similar_tracks_and_plays_them(browser, tiny_bundle, examples, tmp_path):
    from acousticsense.scan import scan

    music = tmp_path / "music"
    music.mkdir()
    for clip in examples.glob("*.ogg"):
        (music / clip.name).write_bytes(clip.read_bytes())
    scan(music, tmp_path / "library.db", tiny_bundle)
    with running(create_app(tiny_bundle, examples_dir=examples, db=tmp_path / "library.db")) as base:
        genres = httpx.get(f"{base}/api/v1/library/genres").json()["genres"]
        genre = next(iter(genres))
        [first, *_] = httpx.get(f"{base}/api/v1/library/search", params={"genre": genre}).json()["tracks"]
        page = open_page(browser, base)
        try:
            page.get_by_role("tab", name="Library").click()
            page.locator("#library-chart img[src^='data:image/png']").wait_for()  # the genre distribution
            page.locator("#library-genre input").fill(genre)
            page.keyboard.press("Enter")
            page.click("#library-search")
            status = f"{genres[genre]} track{'s' if genres[genre] > 1 else ''} whose top genre is {genre}: click one for more like it."
            page.locator("#library-status").get_by_text(status).wait_for()
            page.locator("#library-results").get_by_text(first["path"]).filter(visible=True).first.click()
            nearest = page.locator("#library-similar [role=row]:has([role=gridcell])")
            nearest.nth(len(list(examples.glob("*.ogg"))) - 1).wait_for()  # the query first, then every other track
            assert nearest.first.locator("[role=gridcell]").all_inner_texts()[:3] == ["this", str(first["id"]), first["path"]]
            audio = page.locator("#library-player audio")
            assert audio.get_attribute("src") == f"api/v1/library/tracks/{first['id']}/audio"
            page.wait_for_function("() => document.querySelector('#library-player audio').duration > 0")  # loaded through the API
            other = nearest.nth(1).locator("[role=gridcell]")
            other.nth(2).click()  # a similar track: the player takes it
            page.locator(f"#library-player audio[src='api/v1/library/tracks/{other.nth(1).inner_text()}/audio']").wait_for()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser-library.png"), full_page=True)
        finally:
            page.close()


def test_the_live_tab_ranks_what_the_microphone_hears(browser, url, tmp_path):
    """Chromium's fake microphone plays a WAV into the page's Live tab; the ranking and timeline appear."""
    wav = write_audio(tmp_path / "mic.wav", music_like(20.0, 48000, seed=5), 48000)
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={wav}"]
    with contextlib.closing(browser.browser_type.launch(executable_path=str(CHROMIUM), args=args)) as with_mic:  # a second Chromium, with the fake microphone
        page = with_mic.new_context(viewport=DESKTOP, permissions=["microphone"]).new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.get_by_role("tab", name="Live").click()
        page.locator("#live-mic").get_by_role("button", name="Record").click()
        page.locator("#live-genres [data-testid=label-output-value]").wait_for()
        assert page.locator("#live-genres [data-testid=label-output-value]").inner_text() in TINY_LABELS
        page.locator("#live-timeline img[src^='data:image/png']").wait_for()
        assert "heard" in page.locator("#live-status").inner_text()
        page.screenshot(path=str(ARTIFACTS / "browser-live.png"), full_page=True)

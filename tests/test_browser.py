"""The Gradio page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acousticsense.serve import create_app

from conftest import music_like, write_audio
from test_serve import running

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(__file__).parent.parent / "artifacts"
TOP_GENRE = "#genres [data-testid=label-output-value]"

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


@pytest.fixture
def page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    page.goto(url)
    yield page
    page.close()


def api_top_label(url: str, path: Path) -> str:
    r = httpx.post(f"{url}/api/v1/classify", files={"file": (path.name, path.read_bytes())}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["top_k"][0]["label"]


def test_upload_and_classify_shows_the_api_top_genre(page, url, clip_mp3):
    page.get_by_text("Model card").wait_for()
    page.locator("#audio-in input[type=file]").set_input_files(str(clip_mp3))
    page.click("#classify")
    top = page.locator(TOP_GENRE)
    top.wait_for()
    assert top.inner_text() == api_top_label(url, clip_mp3)
    page.get_by_text("Analysed 7.0 s in 6 windows.").wait_for()
    assert page.locator("img[src^='data:image/png']").count() == 2  # spectrogram and timeline plots
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser.png"), full_page=True)


def test_example_clips_are_listed_and_classify(page, url, examples):
    page.get_by_text("jazz.ogg").wait_for()
    page.get_by_text("metal.ogg").click()
    page.click("#classify")
    top = page.locator(TOP_GENRE)
    top.wait_for()
    assert top.inner_text() == api_top_label(url, examples / "metal.ogg")


def test_a_bad_file_shows_a_readable_message(page, tmp_path):
    bad = tmp_path / "broken.mp3"
    bad.write_text("this is not audio\n" * 50)
    page.locator("#audio-in input[type=file]").set_input_files(str(bad))
    page.click("#classify")
    page.get_by_text("broken.mp3: not a readable audio file").wait_for()
    assert "Traceback" not in page.locator("body").inner_text()


def test_warnings_are_shown_in_the_page(page, tmp_path):
    short = write_audio(tmp_path / "short.wav", music_like(1.0, 22050), 22050)
    page.locator("#audio-in input[type=file]").set_input_files(str(short))
    page.click("#classify")
    page.locator("#notes").get_by_text("warning short_audio").wait_for()
    assert "clip is 1.00 s, shorter than the 2 s window" in page.locator("#notes").inner_text()

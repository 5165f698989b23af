"""Untrusted input: a corpus of odd, broken and hostile files through the CLI in one batch and through REST.

Every input gives a valid result or a one-line error naming the file: no traceback, no 5xx, no hang,
no lost result, no NaN; and no input makes the tool read another file, open a URL or a port.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from acousticsense.audio import load_audio
from acousticsense.errors import AudioError
from acousticsense.serve import create_app
from conftest import music_like, video, write_audio
from test_serve import running

SR = 22050
REFUSED = "refused: it reads as '{}', not an audio file format"


def wav(rate: int, data: bytes, tag: int = 1, channels: int = 1, bits: int = 16, declared: int | None = None) -> bytes:
    """A RIFF/WAVE file written by hand, so that every header field can lie."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate & 0xFFFFFFFF, (rate * align) & 0xFFFFFFFF, align, bits)
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def float32(x: np.ndarray) -> bytes:
    return np.asarray(x, "<f4").tobytes()


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\x00\x00\x00\x00" * 2)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 2, 8, 0, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def midi() -> bytes:
    track = bytes([0x00, 0x90, 60, 100, 0x60, 0x80, 60, 0, 0x00, 0xFF, 0x2F, 0x00])
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 96) + b"MTrk" + struct.pack(">I", len(track)) + track


def corrupt_middle(data: bytes, n: int = 4000) -> bytes:
    mid = len(data) // 2
    noise = np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes()
    return data[:mid] + noise + data[mid + n :]


def make_corpus(d: Path, probe_url: str, secret: Path) -> dict[str, str | None]:
    """Write the odd inputs into ``d``; returns file name -> what its outcome must mention (None: any valid outcome)."""
    d.mkdir(parents=True, exist_ok=True)
    music = music_like(6.0, SR)[0]
    enc = d / "_enc"
    enc.mkdir(exist_ok=True)
    encoded = {ext: write_audio(enc / f"m{ext}", music_like(6.0, 44100, channels=2), 44100).read_bytes() for ext in (".mp3", ".ogg", ".flac", ".m4a")}
    t = np.arange(int(2 * SR)) / SR
    files: dict[str, tuple[bytes, str | None]] = {
        # not audio at all
        "empty.wav": (b"", "empty"),
        "one_byte.mp3": (b"\x00", "not a readable audio file"),
        "notes.mp3": (b"just some text, not music\n" * 30, "not a readable audio file"),
        "picture.wav": (png(), None),
        "song.mid.mp3": (midi(), None),
        "page.ogg": (b"<html><body>404 not found</body></html>" * 20, None),
        "zeros.wav": (bytes(4096), None),
        "random.mp3": (np.random.default_rng(1).integers(0, 256, 8192, dtype=np.uint8).tobytes(), None),
        "archive.m4a": (b"PK\x03\x04" + bytes(2000), None),
        # hostile: playlists, stream descriptions, concat lists
        "local.m3u8": (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{secret}\n#EXT-X-ENDLIST\n".encode(), REFUSED.format("hls")),
        "remote.m3u8": (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{probe_url}/x.mp3\n#EXT-X-ENDLIST\n".encode(), REFUSED.format("hls")),
        "stream.sdp": (b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n", REFUSED.format("sdp")),
        "list.ffconcat": (f"ffconcat version 1.0\nfile {secret}\n".encode(), REFUSED.format("concat")),
        "list.wav": (f"ffconcat version 1.0\nfile {probe_url}/y.wav\n".encode(), REFUSED.format("concat")),
        "plain.m3u": (f"#EXTM3U\n{secret}\n{probe_url}/z.mp3\n".encode(), "refused: a playlist (m3u/pls), not audio"),  # no demuxer reads it
        "media.m3u8": (f"\ufeff#EXTM3U\n#EXTINF:10,\n{secret}\n".encode(), "refused: a playlist (m3u/pls), not audio"),  # too little for FFmpeg's hls probe
        "radio.pls": (f"[playlist]\nFile1={probe_url}/s.mp3\nFile2={secret}\nNumberOfEntries=2\n".encode(), "refused: a playlist (m3u/pls), not audio"),  # FFmpeg reads it as lrc
        "bare.m3u": (f"{probe_url}/a.mp3\n{secret}\n".encode(), "refused: a playlist (m3u/pls), not audio"),  # no #EXTM3U line: a name a line
        "noise.m3u": (bytes(range(200, 256)) * 40, "not a readable audio file"),  # binary under a playlist's name is no playlist
        # truncated and corrupt
        "half.mp3": (encoded[".mp3"][: len(encoded[".mp3"]) // 2], "truncated_input"),
        "half.ogg": (encoded[".ogg"][: len(encoded[".ogg"]) // 2], "truncated_input"),
        "half.flac": (encoded[".flac"][: len(encoded[".flac"]) // 2], "decode_error"),
        "half.m4a": (encoded[".m4a"][: len(encoded[".m4a"]) // 2], None),
        "head.mp3": (encoded[".mp3"][:200], None),
        "garbled.mp3": (corrupt_middle(encoded[".mp3"]), None),
        "garbled.flac": (corrupt_middle(encoded[".flac"]), None),
        "garbled.m4a": (corrupt_middle(encoded[".m4a"]), None),
        # lying WAV headers
        "header_only.wav": (wav(SR, b""), "no audio samples"),
        "claims_more.wav": (wav(SR, pcm16(music), declared=len(pcm16(music)) * 100), None),
        "claims_zero.wav": (wav(SR, pcm16(music), declared=0), None),
        "claims_max.wav": (wav(SR, pcm16(music), declared=0xFFFFFFFF), None),
        "rate_1hz.wav": (wav(1, pcm16(music)[:44000]), "sample rate 1 Hz is not plausible"),
        "rate_0.wav": (wav(0, pcm16(music)), None),
        "rate_huge.wav": (wav(0xFFFFFFFF, pcm16(music)), None),
        "tag_9999.wav": (wav(SR, pcm16(music), tag=0x9999), "codec"),
        "no_channels.wav": (wav(SR, pcm16(music), channels=0), None),
        "bits_0.wav": (wav(SR, pcm16(music), bits=0), None),
        "odd_bytes.wav": (wav(SR, pcm16(music) + b"\x01"), None),
        # tiny, quiet, degenerate
        "one_sample.wav": (wav(SR, pcm16(music[:1])), "short_audio"),
        "short_50ms.wav": (wav(SR, pcm16(music[: int(0.05 * SR)])), "short_audio"),
        "silence.wav": (wav(SR, pcm16(np.zeros(5 * SR))), "silent"),
        "minus70dB.wav": (wav(SR, pcm16(music * 10 ** (-70 / 20) / np.abs(music).max())), "silent"),
        "dc.wav": (wav(SR, pcm16(np.full(3 * SR, 0.5))), None),
        "white_noise.wav": (wav(SR, pcm16(np.random.default_rng(2).uniform(-0.5, 0.5, 3 * SR))), None),
        "square_full_scale.wav": (wav(SR, pcm16(np.sign(np.sin(2 * np.pi * 440 * t)))), None),
        "sine_1k.wav": (wav(SR, pcm16(0.5 * np.sin(2 * np.pi * 1000 * t))), None),
        "out_of_phase.wav": (wav(SR, np.stack([music, -music], 1).astype(np.float32).tobytes(), tag=3, channels=2, bits=32), "silent"),
        # float samples: NaN, inf, huge, denormal
        "nan.wav": (wav(SR, float32(np.where(np.arange(len(music)) % 1000 == 0, np.nan, music)), tag=3, bits=32), "NaN or infinite"),
        "inf.wav": (wav(SR, float32(np.where(np.arange(len(music)) == 500, np.inf, music)), tag=3, bits=32), "NaN or infinite"),
        "huge_1e20.wav": (wav(SR, float32(music * 1e20), tag=3, bits=32), "extreme_level"),
        "denormal.wav": (wav(SR, float32(music * 1e-40), tag=3, bits=32), "silent"),
        "float64.wav": (wav(SR, np.asarray(music, "<f8").tobytes(), tag=3, bits=64), None),
        "unsigned8.wav": (wav(SR, ((music + 1) * 127.5).astype(np.uint8).tobytes(), bits=8), None),
        "alaw.wav": (wav(8000, np.full(8000, 0xD5, np.uint8).tobytes(), tag=6, bits=8), None),
        "mulaw.wav": (wav(8000, np.full(8000, 0xFF, np.uint8).tobytes(), tag=7, bits=8), None),
        # unusual but valid audio
        "low_8k.wav": (wav(8000, pcm16(music_like(3.0, 8000)[0])), "low_sample_rate"),
        "hi_96k_6ch.wav": (wav(96000, pcm16(music_like(1.0, 96000, channels=6).T.reshape(-1)), channels=6), None),
        "unnamed_9ch.wav": (wav(SR, pcm16(np.repeat(music[:, None], 9, 1).reshape(-1)), channels=9), None),
        "unnamed_64ch_float.wav": (wav(SR, float32(np.repeat(music[: 2 * SR, None], 64, 1).reshape(-1)), tag=3, channels=64, bits=32), None),
        "concat_rates.aac": (b"".join(write_audio(enc / f"{r}.aac", music_like(2.0, r, channels=2), r).read_bytes() for r in (44100, 22050)), None),
        "ok.mp3": (encoded[".mp3"], None),
        "ok.ogg": (encoded[".ogg"], None),
        "ok.m4a": (encoded[".m4a"], None),
        "Live: take 1.wav": (wav(SR, pcm16(music)), None),
        "música ñ 'quoted'.flac": (encoded[".flac"], None),
        "http:x.wav": (wav(SR, pcm16(music)), None),
    }
    for name, (data, _) in files.items():
        (d / name).write_bytes(data)
    write_audio(d / "24bit.flac", music_like(2.0, 48000, channels=2), 48000)
    video(d / "video_with_audio.mp4", True)
    video(d / "video_only.mp4", False)
    # two hours of 8-bit 8 kHz audio (a quiet tone): analysed up to max_seconds, never all of it
    hours = (128 + 8 * np.sin(2 * np.pi * 220 * np.arange(8000) / 8000)).astype(np.uint8).tobytes()
    (d / "two_hours.wav").write_bytes(wav(8000, hours * 7200, bits=8))
    expected = {name: want for name, (_, want) in files.items()}
    expected |= {"24bit.flac": None, "video_with_audio.mp4": None, "video_only.mp4": "no audio stream", "two_hours.wav": "truncated"}
    return expected


class Probe:
    """A loopback TCP server that only counts the connections it gets (an input must never cause one)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.hits, self.running = 0, True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def probe():
    p = Probe()
    yield p
    p.close()


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secret") / "secret.wav"
    path.write_bytes(wav(SR, pcm16(music_like(3.0, SR)[0])))  # readable audio: if it were read, the playlist would "work"
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, probe, secret) -> tuple[Path, dict[str, str | None]]:
    d = tmp_path_factory.mktemp("odd")
    expected = make_corpus(d, probe.url, secret)
    (d / "folder.mp3").mkdir()
    (d / "loop.mp3").symlink_to(d / "loop.mp3")
    (d / "device.wav").symlink_to("/dev/zero")
    expected |= {"folder.mp3": "a folder with no audio files in it", "loop.mp3": "symbolic links", "device.wav": "is a device"}
    return d, expected


def no_nan(text: str) -> object:
    """JSON that is valid by the standard: NaN and Infinity are refused."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))


def test_corpus_is_large_and_varied(corpus):
    assert len(corpus[1]) >= 60


def test_cli_one_batch_every_file_answered_in_order(corpus, tiny_bundle, probe):
    d, expected = corpus
    names = sorted(expected)
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "acousticsense.cli", "predict", *names, "--model", str(tiny_bundle), "--json"],
        cwd=d, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert time.monotonic() - start < 300
    assert out.returncode == 1 and "Traceback" not in out.stderr
    docs = no_nan(out.stdout)
    assert [doc["source"] for doc in docs] == names  # nothing lost, input order kept
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    failures = [doc for doc in docs if "error" in doc]
    assert len(errors) == len(failures) and all("\n" not in f["error"] for f in failures)
    for doc in docs:
        name, want = doc["source"], expected[doc["source"]]
        if "error" in doc:
            assert doc["error"].startswith(f"{name}: "), doc
            text = doc["error"]
        else:
            assert doc["silent"] or (doc["top_k"] and all(0 <= g["probability"] <= 1 for g in doc["top_k"])), doc
            assert all(math.isfinite(w["probability"]) for w in doc["timeline"])
            text = json.dumps(doc["warnings"]) + (" silent" if doc["silent"] else "")
        if want:
            assert want in text, (name, text)
    assert probe.hits == 0


def test_rest_every_upload_is_a_result_or_a_4xx(corpus, tiny_bundle, probe):
    d, expected = corpus
    client = TestClient(create_app(tiny_bundle, max_seconds=600, max_upload_mb=50))
    statuses = {}
    for name in sorted(expected):
        path = d / name
        if not path.is_file() or path.is_symlink():
            continue  # folders, loops and devices cannot be uploaded
        start = time.monotonic()
        r = client.post("/api/v1/classify", files={"file": (name, path.read_bytes())})
        assert time.monotonic() - start < 60, name
        statuses[name] = r.status_code
        assert r.status_code == 200 or 400 <= r.status_code < 500, (name, r.status_code, r.text)
        doc = no_nan(r.text)
        if r.status_code == 200:
            assert doc["source"] == name
        elif r.status_code != 413:
            assert doc["detail"].startswith(f"{name}: ") and "\n" not in doc["detail"], doc
        want = expected[name]
        if want and r.status_code != 413:
            assert want in r.text or (want == "truncated" and r.status_code == 200), (name, r.text)
    assert statuses["two_hours.wav"] == 413  # 57.6 MB: over the upload limit
    assert all(statuses[n] == 422 for n in ("local.m3u8", "remote.m3u8", "stream.sdp", "list.ffconcat"))
    assert probe.hits == 0


def test_playlists_and_stream_descriptions_open_nothing(tmp_path, probe, secret):
    """The local-file path too: FFmpeg never gets to parse what would make it read or connect."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    udp.close()
    cases = {
        "a.m3u8": (f"#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5,\n{secret}\n#EXTINF:5,\n{probe.url}/x.mp3\n#EXT-X-ENDLIST\n", "hls"),
        "b.sdp": (f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP 0\n", "sdp"),
        "c.txt": (f"ffconcat version 1.0\nfile {secret}\nfile {probe.url}/y.wav\n", "concat"),
    }
    for name, (text, fmt) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        start = time.monotonic()
        with pytest.raises(AudioError, match=REFUSED.format(fmt)):
            load_audio(path, SR)
        with pytest.raises(AudioError):  # without a file name FFmpeg may not even recognise the format
            load_audio(path.read_bytes(), SR)
        assert time.monotonic() - start < 2  # nothing waited on a port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))  # still free: nobody listened on it
    assert probe.hits == 0


def test_stdin_and_pipes_are_read(clip_mp3, tiny_bundle):
    cli = [sys.executable, "-m", "acousticsense.cli", "predict", "--model", str(tiny_bundle), "--json"]
    piped = subprocess.run([*cli, "-"], stdin=open(clip_mp3, "rb"), capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    direct = json.loads(subprocess.run([*cli, str(clip_mp3)], capture_output=True, text=True, timeout=120).stdout)
    fifo = subprocess.run(["bash", "-c", f'"$@" <(cat {clip_mp3})', "_", *cli], capture_output=True, text=True, timeout=120)
    assert fifo.returncode == 0, fifo.stderr
    for doc in (json.loads(piped.stdout), json.loads(fifo.stdout)):
        # a stream cannot be searched for the mp3's gapless info, so the first milliseconds differ a little
        assert doc["duration"] == pytest.approx(direct["duration"], abs=0.1)
    assert json.loads(piped.stdout)["source"] == "<stdin>" and json.loads(fifo.stdout)["source"].startswith("/dev/fd/")
    closed = subprocess.run(["bash", "-c", '"$@" <&-', "_", *cli, "-"], capture_output=True, text=True, timeout=120)
    assert closed.returncode == 2 and closed.stderr.strip() == "error: '-': standard input is closed"


def gradio_call(base: str, value: object, event: str = "classify") -> str:
    """One call of a page event (``classify``; ``on_chunk``: the Live tab's microphone stream) through Gradio's HTTP
    API; returns the event stream's text up to its first answer (a stream stays open for its next chunk)."""
    r = httpx.post(f"{base}/gradio_api/call/{event}", json={"data": [value]}, timeout=30)
    r.raise_for_status()
    text, start = "", time.monotonic()
    with httpx.stream("GET", f"{base}/gradio_api/call/{event}/{r.json()['event_id']}", timeout=30) as answer:
        for line in answer.iter_lines():  # Gradio sends a heartbeat every 15 s while nothing else comes
            text += line + "\n"
            if (line.startswith("data:") and not line.startswith("data: null")) or time.monotonic() - start > 30:
                break
    return text


def test_the_web_page_reads_only_what_was_uploaded_to_it(tiny_bundle, probe, secret, clip_mp3, tmp_path, capfd):
    """A crafted call naming a server path, a FIFO, a device or a URL is refused before anything is read."""
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    with running(create_app(tiny_bundle, max_seconds=5)) as base:
        for path in (secret, "/etc/passwd", fifo, "/dev/zero", f"{probe.url}/x.mp3", "http://example.com/x.mp3"):
            start = time.monotonic()
            text = gradio_call(base, {"path": str(path), "meta": {"_type": "gradio.FileData"}})
            assert "event: error" in text and "only clips uploaded to this page can be classified" in text, (path, text)
            assert time.monotonic() - start < 5, path  # nothing waited on the FIFO or read /dev/zero
        for path in (secret, "/etc/passwd", f"{probe.url}/x.wav"):  # the Live tab's microphone input too
            text = gradio_call(base, {"path": str(path), "meta": {"_type": "gradio.FileData"}}, "on_chunk")
            assert "event: error" in text and "only clips uploaded to this page can be classified" in text, (path, text)
        for value in ({"path": "/etc/passwd"}, 123, "/etc/passwd", [1e308]):  # no file reference at all: its reason, no traceback
            for event in ("classify", "on_chunk"):
                text = gradio_call(base, value, event)
                assert "event: error" in text and "not a file reference" in text, (value, text)
        assert set(httpx.get(f"{base}/gradio_api/info").json()["named_endpoints"]) == {"/classify", "/on_chunk"}  # page upkeep is private
        uploaded = httpx.post(f"{base}/gradio_api/upload", files={"files": ("clip.mp3", clip_mp3.read_bytes())}, timeout=30).json()[0]
        text = gradio_call(base, {"path": uploaded, "meta": {"_type": "gradio.FileData"}})
        assert "event: complete" in text and "clip.mp3" in text and "analysed in" in text, text
        text_file = httpx.post(f"{base}/gradio_api/upload", files={"files": ("notes.mp3", b"not audio\n" * 50)}, timeout=30).json()[0]
        text = gradio_call(base, {"path": text_file, "meta": {"_type": "gradio.FileData"}}, "on_chunk")  # Gradio's decoder fails: said, no traceback
        assert "event: error" in text and "notes.mp3: not audio this input can read" in text, text
        # a Live stream holds its slot until it stops: another visitor's recording is still heard meanwhile
        chunk = httpx.post(f"{base}/gradio_api/upload", files={"files": ("chunk.wav", wav(SR, pcm16(music_like(10.0, SR)[0])))}, timeout=30).json()[0]
        for _ in range(2):
            start = time.monotonic()
            text = gradio_call(base, {"path": chunk, "meta": {"_type": "gradio.FileData"}}, "on_chunk")
            assert "event: generating" in text and "heard" in text and time.monotonic() - start < 20, text
    assert probe.hits == 0
    assert "Traceback" not in capfd.readouterr().err


def test_a_planted_temp_symlink_is_not_written_through(tmp_path):
    """Rewriting config.json went through a temporary file: a symlink planted under its name overwrote the file it named."""
    from acousticsense.bundle import write_config
    from acousticsense.config import CONFIG_NAME, read_config
    from acousticsense.options import DEFAULT_BUNDLE

    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / CONFIG_NAME).write_text((DEFAULT_BUNDLE / CONFIG_NAME).read_text())
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (bundle / f".{CONFIG_NAME}.{os.getpid()}.tmp").symlink_to(victim)
    write_config(bundle, read_config(bundle))
    assert victim.read_text() == "precious"
    assert not (bundle / CONFIG_NAME).is_symlink() and read_config(bundle).labels == read_config(DEFAULT_BUNDLE).labels


def test_a_failed_or_interrupted_write_leaves_the_file_as_it_was(tmp_path):
    """Every file the tool rewrites (a bundle's config and weights, a checkpoint, a log, a report, an export) goes
    through files.replacing: what fails or is interrupted mid-write leaves the old file and no temporary one."""
    from acousticsense.files import replacing, write_whole

    from acousticsense.errors import OutputError

    path = tmp_path / "report.json"
    write_whole(path, b"old")
    for stop, said in ((OSError(errno.ENOSPC, "No space left on device"), OutputError), (KeyboardInterrupt(), KeyboardInterrupt)):
        with pytest.raises(said), replacing(path) as tmp:
            tmp.write_bytes(b"half")
            raise stop
        assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["report.json"]
    with pytest.raises(OutputError, match=r"report.json: cannot be written \(No space left on device\)$"), replacing(path):
        raise OSError(errno.ENOSPC, "No space left on device")  # the CLI's one error line, naming the file (was a traceback)
    (tmp_path / ".report.json.4194305.tmp").write_bytes(b"left by a killed process")  # above any Linux pid: not running
    (tmp_path / ".report.json.1.tmp").write_bytes(b"a running process's")  # init runs: its file is left alone
    write_whole(path, b"new")
    assert path.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == [".report.json.1.tmp", "report.json"]


def test_an_onnx_model_naming_external_data_is_refused(tmp_path):
    """Older ONNX Runtimes read whatever file an initializer's external data names (/etc/passwd, ../secret)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.external_data_helper import set_external_data

    from acousticsense.bundle import OnnxModel
    from acousticsense.errors import BundleError

    bias = helper.make_tensor("bias", TensorProto.FLOAT, [2], bytes(8), raw=True)
    set_external_data(bias, location="/etc/passwd")
    bias.ClearField("raw_data")
    graph = helper.make_graph([helper.make_node("Add", ["x", "bias"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [bias])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    with pytest.raises(BundleError, match="point to data in other files"):
        OnnxModel(tmp_path / "model.onnx", 2, 32)

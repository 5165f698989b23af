"""Real-time classification: chunks and pipes give the offline timeline's rankings, in bounded memory, from every source."""

from __future__ import annotations

import http.server
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest
import torch
from conftest import ENCODINGS, music_like, random_model, tiny_config, write_audio

from acousticsense.audio import load_audio
from acousticsense.bundle import EXAMPLES_DIR, save_bundle
from acousticsense.errors import AudioError, ParameterError
from acousticsense.features import window_count
from acousticsense.inference import Classifier
from acousticsense.live_sources import decode_stream, microphone_chunks
from acousticsense.stream import LiveClassifier, classify_stream

SR = 22050


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Single-window batches on a shared CPU: one intra-op thread is faster than several contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tiny_bundle) -> Classifier:
    return Classifier.from_bundle(tiny_bundle, device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """6 s of stereo music at 44.1 kHz as mp3 (decoded frame by frame as it arrives, resampled to the model's rate)."""
    return write_audio(tmp_path_factory.mktemp("stream") / "clip.mp3", music_like(6.0, 44100, seed=5, channels=2), 44100)


def assert_matches_offline(updates, result, smoothing=None, tol=1e-4):
    """Every window of ``result.timeline`` in order, same times, silence, top-1 and probabilities; smoothed = their EMA."""
    assert [(u.start, u.end, u.silent) for u in updates] == [(w.start, w.end, w.silent) for w in result.timeline]
    ema = None
    for u, w in zip(updates, result.timeline):
        if w.silent:
            assert u.top_k == []
            continue
        assert u.top_k[0].label == w.label
        got = {g.label: g.probability for g in u.top_k}
        assert max(abs(got[label] - p) for label, p in w.probabilities.items()) < tol
        if smoothing is not None:
            labels = list(w.probabilities)  # the model's label order
            row = np.array(list(w.probabilities.values()))
            ema = row if ema is None else smoothing * row + (1 - smoothing) * ema
            assert u.smoothed[0].label == labels[int(ema.argmax())]
            assert all(abs(g.probability - ema[labels.index(g.label)]) < tol for g in u.smoothed)


def feed_pipe(data: bytes, seconds: float, pace: str) -> tuple[io.BufferedReader, threading.Thread]:
    """A pipe written by a thread: at real-time pace, as fast as possible, or fast with a 1.5 s stall half-way."""
    r, w = os.pipe()

    def write() -> None:
        pieces = 40
        step = -(-len(data) // pieces)
        for i in range(pieces):
            os.write(w, data[i * step : (i + 1) * step])
            if pace == "realtime":
                time.sleep(seconds / pieces)
            elif pace == "stall" and i == pieces // 2:
                time.sleep(1.5)
        os.close(w)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return os.fdopen(r, "rb"), thread


def offline(clf: Classifier, data: bytes, **options):
    """``classify`` of ``data`` read from a pipe (an mp3 decodes a little differently from a pipe than from a seekable file)."""
    pipe, writer = feed_pipe(data, 0, "fast")
    result = clf.classify(pipe, **options)
    writer.join()
    return result


def test_chunks_give_the_offline_timeline_built_in_model():
    """The built-in model, a silent stretch and random chunk sizes: every window equals classify's, the end's included."""
    clf = Classifier.from_bundle(device="cpu")
    x = music_like(23.3, SR, seed=3)[0]
    x[int(11.5 * SR) : int(20.5 * SR)] = 0  # the window at 12-20 s is silent
    result = clf.classify(x, hop=4.0, top_k=16)
    live, updates, rng, i = LiveClassifier(clf, top_k=16, hop=4.0, smoothing=0.4), [], np.random.default_rng(0), 0
    while i < len(x):
        n = int(rng.integers(1, 40000))
        updates += live.push(x[i : i + n])
        i += n
    updates += live.finish()
    assert [u.silent for u in updates].count(True) == 1 and updates[-1].end == round(len(x) / SR, 3)
    assert_matches_offline(updates, result, smoothing=0.4)
    assert all(u.time == u.end and u.latency_ms >= 0 for u in updates)


def test_each_update_flags_what_is_not_music_as_predict_does():
    """Endless noise was ranked as genres in `stream` and the Live tab while `predict` flagged it."""
    clf = Classifier.from_bundle(device="cpu")
    noise = np.random.default_rng(0).standard_normal(20 * SR).astype(np.float32) * 0.3
    live = LiveClassifier(clf, hop=4.0)
    updates = live.push(noise) + live.finish()
    offline = clf.classify(noise, hop=4.0)
    expected = [w["code"] for w in offline.warnings if w["code"] in ("not_music", "low_confidence")]
    assert expected and all(u.flag in ("not_music", "low_confidence") for u in updates)  # each window alone is no more music
    music = LiveClassifier(clf, hop=4.0)
    example = load_audio(EXAMPLES_DIR / "rock.ogg", SR).samples
    assert [u.flag for u in music.push(example) + music.finish()].count(None) >= 1


@pytest.mark.parametrize("seconds", [0.0, 1.3, 2.0, 5.1])
def test_short_and_uneven_streams_end_like_the_offline_track(tiny, seconds):
    x = music_like(seconds, SR, seed=1)[0] if seconds else np.zeros(0, np.float32)
    warned = []
    updates = list(classify_stream(tiny, np.array_split(x, 7), top_k=4, hop=0.7, smoothing=1.0, source="in.wav", on_warning=lambda *w: warned.append(w)))
    if not seconds:
        assert updates == [] and warned == []
        return
    offline = tiny.classify(x, hop=0.7, top_k=4)
    assert_matches_offline(updates, offline, smoothing=1.0)
    short = [(w["code"], f"in.wav: {w['message']}") for w in offline.warnings if w["code"] == "short_audio"]
    assert warned == short and bool(short) == (seconds < tiny.config.preprocessing.window_seconds)  # told as offline


def test_track_db_scope_uses_the_peak_heard_so_far(tmp_path):
    """A ``db_scope="track"`` bundle: with the loudest moment in the first window, the running peak is the track's."""
    config = tiny_config(db_scope="track")
    clf = Classifier.from_bundle(save_bundle(tmp_path / "track_db", random_model(config, seed=1), config), device="cpu")
    x = music_like(6.0, SR, seed=4)[0]
    x[: SR // 2] *= 1.9
    updates = list(classify_stream(clf, np.array_split(x, 5), top_k=4, hop=1.0))
    assert_matches_offline(updates, clf.classify(x, hop=1.0, top_k=4))


def test_extreme_levels_are_scaled_and_non_finite_samples_refused_as_offline(tiny):
    x = music_like(6.0, SR, seed=2)[0].astype(np.float64) * 3e29  # finite, but its powers overflow float32
    warned = []
    updates = list(classify_stream(tiny, np.array_split(x, 5), top_k=4, hop=1.0, source="loud.wav", on_warning=lambda *w: warned.append(w)))
    offline_result = tiny.classify(x.astype(np.float32), hop=1.0, top_k=4)  # scaled to full scale as a whole, with the same warning
    assert [w["code"] for w in offline_result.warnings] == ["extreme_level"]
    assert_matches_offline(updates, offline_result, tol=1e-3)  # each window's spectrogram is relative to its own peak
    assert len(warned) == 1 and warned[0][0] == "extreme_level" and warned[0][1].startswith("loud.wav: samples reach 1") and "scaled down" in warned[0][1]
    for bad in (np.nan, np.inf, 1e300):  # 1e300: beyond float32's range
        y = music_like(3.0, SR, seed=2)[0].astype(np.float64)
        y[SR + 5] = bad
        with pytest.raises(AudioError, match=r"^odd.wav: contains 1 NaN or infinite samples from 1.00 s"):
            list(classify_stream(tiny, [y[:SR // 2], y[SR // 2 :]], top_k=4, source="odd.wav"))
    stereo = music_like(3.0, SR, seed=2, channels=2)  # refused as offline: it was flattened into one channel twice as long
    for block in (stereo, stereo.T, stereo.tolist()):
        with pytest.raises(AudioError, match=r"^two.wav: expected a mono waveform \(1-D\), got shape \((2, 66150|66150, 2)\)$"):
            LiveClassifier(tiny, source="two.wav").push(block)


def test_a_hop_longer_than_the_window_is_said_as_offline(tiny):
    """stream --hop 3600 skipped audio without a word where predict warns of the gaps."""
    warned, x = [], music_like(6.0, SR, seed=2)[0]
    updates = list(classify_stream(tiny, [x], top_k=4, hop=3.0, source="s.wav", on_warning=lambda *w: warned.append(w)))
    assert warned == [("gaps", "s.wav: the hop (3 s) is longer than the window (2 s): 33% of the stream falls between windows and is not analysed")]
    offline_result = tiny.classify(x, hop=3.0, top_k=4)
    assert_matches_offline(updates, offline_result)
    assert [w["code"] for w in offline_result.warnings] == ["gaps"]


def test_a_level_jump_mid_window_rescales_what_is_held(tmp_path):
    """A ``db_scope="track"`` stream: 1.5 s at 500x full scale (kept), then 1e6x (scaled down, and the held samples and
    the running peak with it): every window ranks as offline, which scales the whole track by its peak."""
    config = tiny_config(db_scope="track")
    clf = Classifier.from_bundle(save_bundle(tmp_path / "track_db", random_model(config, seed=1), config), device="cpu")
    x = music_like(6.0, SR, seed=4)[0].astype(np.float64)
    cut = int(1.5 * SR)
    x[:cut] *= 500
    x[cut:] *= 1e6
    updates = list(classify_stream(clf, [x[:cut], x[cut : 2 * cut], x[2 * cut :]], top_k=4, hop=1.0))
    offline_result = clf.classify(x.astype(np.float32), hop=1.0, top_k=4)
    assert [(u.start, u.silent) for u in updates] == [(w.start, w.silent) for w in offline_result.timeline]
    for u, w in zip(updates, offline_result.timeline):
        assert u.top_k[0].label == w.label and u.top_k[0].probability == pytest.approx(w.probabilities[w.label], abs=1e-3)
    warned = []  # what a stream cannot do as offline is said, never silently changed (the ccmusic import asks for both)
    LiveClassifier(clf, source="s.wav", on_warning=lambda *w: warned.append(w))
    centred = tiny_config(db_scope="track", chunking="centred")
    LiveClassifier(Classifier.from_bundle(save_bundle(tmp_path / "centred", random_model(centred, seed=1), centred), device="cpu"),
                   source="s.wav", on_warning=lambda *w: warned.append(w))
    assert warned == [
        ("not_as_offline", "s.wav: this model takes its dB reference over the whole track (a stream: the loudest part heard so far): "
                           "these rankings may differ from predict's"),
        ("not_as_offline", "s.wav: this model places its windows centred in the whole track (a stream: every hop from its start) and takes its "
                           "dB reference over the whole track (a stream: the loudest part heard so far): these rankings may differ from predict's"),
    ]


@pytest.mark.parametrize("pace", ["realtime", "fast", "stall"])
def test_a_pipe_at_any_pace_gives_the_offline_timeline(tiny, clip, pace):
    """A file written into a pipe in real time (6 s), as fast as possible, or with a stall: the rankings of ``classify``."""
    result = offline(tiny, clip.read_bytes(), hop=0.5, top_k=4)
    pipe, writer = feed_pipe(clip.read_bytes(), 6.0, pace)
    began, arrivals, updates = time.monotonic(), [], []
    for u in classify_stream(tiny, decode_stream(pipe, SR), top_k=4, hop=0.5):
        arrivals.append(time.monotonic() - began)
        updates.append(u)
    writer.join()
    assert_matches_offline(updates, result)
    if pace == "realtime":  # each ranking came as its window arrived, not all at the end
        assert arrivals[0] < 4.0 and arrivals[-1] - arrivals[0] > 2.0


def test_a_corrupt_packet_mid_stream_is_skipped_as_offline(tmp_path):
    """A damaged stretch of a radio stream or a file cost the rest of the stream ("the stream stopped after 10.0 s")
    where predict skips its packets and decodes the rest: now the same samples, and the same warning."""
    path = write_audio(tmp_path / "c.mp3", music_like(20.0, 44100, channels=2), 44100)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2048] = np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    pipe, writer = feed_pipe(bytes(data), 0, "fast")
    warned = []
    streamed = np.concatenate(list(decode_stream(pipe, SR, on_warning=lambda *w: warned.append(w))))
    offline_audio = load_audio(io.BytesIO(bytes(data)), SR)
    np.testing.assert_array_equal(streamed, offline_audio.samples)
    assert [code for code, _ in offline_audio.warnings] == ["decode_error"] and len(streamed) > 19 * SR
    assert [(code, message.split(": ", 1)[1]) for code, message in warned] == [
        ("decode_error", "skipped corrupt data (Invalid data found when processing input) and decoded the rest")]


@pytest.mark.parametrize("ext", sorted(ENCODINGS))
def test_every_format_from_a_pipe_decodes_as_offline(tmp_path, ext):
    rate = 48000 if ext == ".opus" else 44100
    seconds = 10.0 if ext == ".m4a" else 2.0  # 2 s of m4a (about 32 KiB) could sit whole in FFmpeg's read buffer, which then seeks back in it
    data = write_audio(tmp_path / f"x{ext}", music_like(seconds, rate, channels=2), rate).read_bytes()
    pipe, writer = feed_pipe(data, 0, "fast")
    if ext == ".m4a":  # its index is at the end: not a streaming format
        with pytest.raises(AudioError, match="save the stream to a file first"):
            list(decode_stream(pipe, SR))
        return
    streamed = np.concatenate(list(decode_stream(pipe, SR)))
    pipe, writer = feed_pipe(data, 0, "fast")
    np.testing.assert_array_equal(streamed, load_audio(pipe, SR).samples)


def test_a_sample_rate_change_mid_stream_is_followed(tmp_path):
    """Concatenated ADTS AAC (44.1 kHz, then 22.05 kHz) through a pipe: the same samples as the offline decoder."""
    data = b"".join(write_audio(tmp_path / f"{rate}.aac", music_like(2.0, rate, channels=2), rate).read_bytes() for rate in (44100, 22050))
    pipe, writer = feed_pipe(data, 0, "fast")
    streamed = np.concatenate(list(decode_stream(pipe, SR)))
    writer.join()
    np.testing.assert_array_equal(streamed, load_audio(data, SR).samples)


def test_memory_stays_bounded_over_hours(tiny):
    """Two hours pushed in 10 s chunks: the buffer never grows, and every window is ranked."""
    live = LiveClassifier(tiny, top_k=1, hop=60.0)
    chunk = (np.random.default_rng(0).standard_normal(10 * SR) * 0.1).astype(np.float32)
    buffer, count = live._buf, 0
    for _ in range(720):
        count += len(live.push(chunk))
        assert live.buffered <= live.capacity
    count += len(live.finish())
    assert live._buf is buffer and live.capacity < 3 * live.pre.window_samples  # 2 windows + the STFT context
    assert count == window_count(720 * 10 * SR, live.pre) and live.total == 720 * 10 * SR


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "acousticsense.cli", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_cli_stream_stdin_json_lines(tiny, tiny_bundle, clip):
    proc = _cli("stream", "-", "--json", "--model", str(tiny_bundle), "--hop", "0.5", "-k", "4")
    out, err = proc.communicate(clip.read_bytes(), timeout=120)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]
    result = offline(tiny, clip.read_bytes(), hop=0.5, top_k=4)
    assert [line["top_k"][0]["label"] for line in lines] == [w.label for w in result.timeline]
    assert set(lines[0]) == {"time", "start", "end", "top_k", "smoothed", "silent", "latency_ms", "flag"}


def test_cli_undecodable_input_is_one_error_line(tiny_bundle):
    from typer.testing import CliRunner

    from acousticsense import cli_live

    ran = CliRunner().invoke(cli_live.app, ["stream", "-", "--model", str(tiny_bundle)], input=b"not audio at all" * 100)
    assert ran.exit_code == 1 and ran.stdout == "" and ran.stderr.startswith("error: <") and ": not a readable audio stream (" in ran.stderr and len(ran.stderr.splitlines()) == 1


def test_cli_stream_says_when_the_bundle_resamples_otherwise(tmp_path, clip):
    """A soxr_hq bundle (the ccmusic import) is streamed through FFmpeg's resampler: said at the start, not silently different."""
    from typer.testing import CliRunner

    from acousticsense import cli_live

    config = tiny_config(resampler="soxr_hq")
    bundle = save_bundle(tmp_path / "soxr", random_model(config, seed=1), config)
    ran = CliRunner().invoke(cli_live.app, ["stream", str(clip), "--json", "--model", str(bundle)])
    assert ran.exit_code == 0 and ran.stderr.startswith(f"warning: {clip}: this model resamples with soxr_hq (a stream: FFmpeg's resampler): "
                                                        "these rankings may differ slightly from predict's\n"), ran.stderr


def test_a_playlist_is_refused_as_offline(tiny_bundle, tmp_path):
    """stream said 'Invalid data' where predict says what the file is (its entries are never opened)."""
    from typer.testing import CliRunner

    from acousticsense import cli_live

    playlist = tmp_path / "list.m3u"
    playlist.write_bytes(b"#EXTM3U\n/etc/passwd\n")
    refused = "refused: a playlist (m3u/pls), not audio; its entries are not opened"
    for args, given in ((["stream", str(playlist)], None), (["stream", "-"], playlist.read_bytes())):
        ran = CliRunner().invoke(cli_live.app, [*args, "--model", str(tiny_bundle)], input=given)
        assert ran.exit_code == 1 and refused in ran.stderr and len(ran.stderr.splitlines()) == 1


def test_cli_threads_out_of_range_is_a_usage_error(tiny_bundle):
    """--threads 100000 made torch's thread pool fail to load a shared object (a 54-line traceback)."""
    from typer.testing import CliRunner

    from acousticsense import cli_live

    ran = CliRunner().invoke(cli_live.app, ["stream", "-", "--model", str(tiny_bundle), "--threads", "100000"])
    assert ran.exit_code == 2 and "Traceback" not in ran.output and ran.output == "error: Invalid value for '--threads': 100000 is not in the range 1<=x<=256.\n"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])  # SIGTERM: systemd's, docker's stop (was a silent kill)
def test_cli_ctrl_c_stops_cleanly(tiny_bundle, clip, stop):
    proc = _cli("stream", "-", "--model", str(tiny_bundle), "--hop", "0.5")
    proc.stdin.write(clip.read_bytes()[: len(clip.read_bytes()) // 2])  # half the stream, then it stalls
    proc.stdin.flush()
    assert b"time" in proc.stdout.readline()  # the header comes with the first ranking
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.decode().strip() == "interrupted"


def _fake_sounddevice(rate: int, signal_: np.ndarray, calls: list) -> types.ModuleType:
    """A ``sounddevice`` whose InputStream delivers ``signal_`` in blocks from a thread, like PortAudio's callback."""
    sd = types.ModuleType("sounddevice")

    class PortAudioError(Exception):
        pass

    def query_devices(device=None, kind=None):
        if device is None and kind is None:  # the list of every device: an output, then the input
            return [{"name": "speakers", "max_input_channels": 0, "default_samplerate": 48000.0},
                    {"name": "fake", "max_input_channels": 1, "default_samplerate": float(rate)}]  # fmt: skip
        if device not in (None, 3):
            raise PortAudioError(f"No input device matching {device!r}")
        return {"name": "fake", "default_samplerate": float(rate)}

    class InputStream:
        def __init__(self, **kwargs):
            calls.append(kwargs)
            self.callback, self.block = kwargs["callback"], kwargs["blocksize"]

        def __enter__(self):
            def run():
                for i in range(0, len(signal_), self.block):
                    self.callback(signal_[i : i + self.block, None], self.block, None, None)
                    time.sleep(0.001)

            threading.Thread(target=run, daemon=True).start()
            return self

        def __exit__(self, *exc):
            calls.append("closed")

    sd.PortAudioError, sd.query_devices, sd.InputStream = PortAudioError, query_devices, InputStream
    return sd


@pytest.mark.parametrize("rate", [SR, 44100])
def test_microphone_through_a_fake_input_stream(tiny, monkeypatch, rate):
    x = music_like(4.0, rate, seed=2)[0]
    calls: list = []
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(rate, x, calls))
    mic = microphone_chunks(3, SR, block_seconds=0.1)
    chunks = []
    for chunk in mic:
        chunks.append(chunk)
        if sum(map(len, chunks)) >= 3.9 * SR:
            break
    mic.close()
    assert calls[0]["device"] == 3 and calls[0]["samplerate"] == rate and calls[0]["channels"] == 1 and calls[-1] == "closed"
    heard = np.concatenate(chunks)
    if rate == SR:
        np.testing.assert_array_equal(heard, x[: len(heard)])
    updates = list(classify_stream(tiny, chunks, top_k=4, hop=0.5))
    assert_matches_offline(updates, tiny.classify(heard, hop=0.5, top_k=4))


def test_cli_listen_json_lines_until_the_device_goes_quiet(tiny_bundle, monkeypatch):
    from typer.testing import CliRunner

    from acousticsense import cli_live, live_sources

    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(44100, music_like(3.0, 44100, seed=6)[0], []))
    monkeypatch.setattr(live_sources, "MIC_WAIT_SECONDS", 0.5)
    ran = CliRunner().invoke(cli_live.app, ["listen", "--device", "3", "--json", "--model", str(tiny_bundle), "--hop", "0.5"])
    lines = [json.loads(line) for line in ran.stdout.splitlines()]
    starts = [line["start"] for line in lines]  # 0 and 0.5, the window at the end of what came (a little under 3 s), the error
    assert starts[:2] == [0.0, 0.5] and 0.95 < starts[2] <= 1.0 and len(starts) == 3 and ran.exit_code == 1
    assert ran.stderr == "error: microphone: no audio for 0.5 s (is the device still there?)\n"


def test_microphone_errors_are_parameter_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(ParameterError, match=r"pip install 'acousticsense\[listen\]'"):
        next(microphone_chunks())
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(SR, np.zeros(10, np.float32), []))
    with pytest.raises(ParameterError, match=r"microphone 7: No input device matching 7 \(listen --list-devices lists the input devices\)"):
        next(microphone_chunks(7))
    from typer.testing import CliRunner

    from acousticsense import cli_live

    listed = CliRunner().invoke(cli_live.app, ["listen", "--list-devices"])  # inputs only, with the number --device takes
    assert listed.exit_code == 0 and listed.stdout == f"1: fake (1 channel, {SR:g} Hz)\n"
    no_default = _fake_sounddevice(SR, np.zeros(10, np.float32), [])
    no_default.query_devices = lambda device=None, kind=None: (_ for _ in ()).throw(no_default.PortAudioError("Error querying device -1"))
    monkeypatch.setitem(sys.modules, "sounddevice", no_default)
    with pytest.raises(ParameterError, match="^microphone: this machine has no default input device"):  # said "microphone None: Error querying device -1"
        next(microphone_chunks())


@pytest.mark.parametrize("url", ["file:///etc/passwd", "concat:/etc/passwd|/etc/hosts", "subfile:,,start,0,end,0,,:/etc/passwd", "udp://127.0.0.1:9", "data:audio/wav;base64,AAAA"])
def test_only_http_https_tcp_tls_urls_and_only_when_allowed(url):
    with pytest.raises(AudioError, match="refused: only http, https, tcp, tls URLs"):
        decode_stream(url, SR, allow_url=True)
    with pytest.raises(AudioError, match="URLs are not read here"):
        decode_stream("http://127.0.0.1:9/radio.mp3", SR)


@pytest.fixture
def http_server(tmp_path, clip):
    (tmp_path / "radio.mp3").write_bytes(clip.read_bytes())
    (tmp_path / "list.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\nradio.mp3\n#EXT-X-ENDLIST\n")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_url_streams_and_playlists_are_refused(http_server, clip, tmp_path):
    try:
        streamed = np.concatenate(list(decode_stream(f"{http_server}/radio.mp3", SR, allow_url=True, timeout=5)))
    except AudioError as e:
        if "Protocol not found" in str(e):
            pytest.skip("this FFmpeg has no http protocol")
        raise
    np.testing.assert_array_equal(streamed, load_audio(clip, SR).samples)
    upper = http_server.replace("http://", "HTTP://user:s3cret@")  # a scheme in capitals is the same scheme
    np.testing.assert_array_equal(np.concatenate(list(decode_stream(f"{upper}/radio.mp3", SR, allow_url=True, timeout=5))), streamed)
    with pytest.raises(AudioError) as missing:
        list(decode_stream(f"{upper}/nothing.mp3", SR, allow_url=True, timeout=5))
    assert "s3cret" not in str(missing.value) and "HTTP://***@" in str(missing.value)  # a password stays out of messages
    with pytest.raises(AudioError, match="refused: it reads as 'hls', not an audio file format"):
        list(decode_stream(f"{http_server}/list.m3u8", SR, allow_url=True, timeout=5))
    (tmp_path / "local.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\nhttp://127.0.0.1:9/x.mp3\n")
    with pytest.raises(AudioError, match="refused: it reads as 'hls'"):
        list(decode_stream(tmp_path / "local.m3u8", SR))


def test_a_url_that_stalls_ends_with_the_audio_it_gave_ranked(tiny, clip):
    data = clip.read_bytes()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            time.sleep(3)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    updates = []
    with pytest.raises(AudioError, match=r"radio.mp3: the stream stopped after \d\.\d s of audio \(no data for 1 s\)"):
        for u in classify_stream(tiny, decode_stream(f"http://127.0.0.1:{server.server_address[1]}/radio.mp3", SR, allow_url=True, timeout=1), hop=0.5):
            updates.append(u)
    server.shutdown()
    assert len(updates) >= 2 and updates[-1].end > 2.5  # the windows that arrived, the end's included


def test_options_are_checked(tiny):
    for smoothing in (0, 1.5, True):
        with pytest.raises(ParameterError, match="smoothing"):
            LiveClassifier(tiny, smoothing=smoothing)
    with pytest.raises(ParameterError, match="hop"):
        LiveClassifier(tiny, hop=0.01)
    live = LiveClassifier(tiny)
    live.finish()
    with pytest.raises(ParameterError, match="after finish"):
        live.push(np.zeros(10, np.float32))
    assert list(itertools.islice(classify_stream(tiny, [np.zeros(3 * SR, np.float32)]), 5))[0].silent


def test_realtime_pacing_holds_a_file_to_the_clock():
    from acousticsense.cli_live import _paced

    began = time.monotonic()
    assert sum(map(len, _paced([np.zeros(SR // 10, np.float32)] * 4, SR))) == 4 * (SR // 10)
    assert time.monotonic() - began >= 0.39


@pytest.mark.parametrize("sent", [0, 1])  # nothing at all yet, or a first clip and then silence
def test_ctrl_c_while_a_pipe_waits_for_data_stops_cleanly(tiny_bundle, clip, sent):
    proc = _cli("stream", "-", "--model", str(tiny_bundle), "--hop", "0.5")
    if sent:
        proc.stdin.write(clip.read_bytes())
        proc.stdin.flush()
    time.sleep(6)  # the model is loaded and the stream waits on the open, silent pipe
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.decode().strip().endswith("interrupted"), err
    assert b"Traceback" not in err and b"empty input" not in err


def test_a_file_without_samples_is_an_error_as_for_predict(tmp_path):
    """A WAV of 0 frames printed nothing and exited 0."""
    import wave

    with wave.open(str(tmp_path / "c0.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(22050)
    with pytest.raises(AudioError, match="c0.wav: contains no audio samples"):
        list(decode_stream(tmp_path / "c0.wav", 22050))


def test_a_file_cut_short_is_said_as_predict_says_it(tmp_path):
    """`stream` of a half-downloaded file said nothing where `predict` warns truncated_input."""
    import struct

    cut = tmp_path / "cut.ogg"
    cut.write_bytes((EXAMPLES_DIR / "jazz.ogg").read_bytes()[:20000])  # no end-of-stream page
    pcm = np.zeros(SR * 2, "<i2").tobytes()  # a WAV whose header claims 6 s and holds 2
    body = b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SR, SR * 2, 2, 16) + b"data" + struct.pack("<I", SR * 12) + pcm
    (tmp_path / "lying.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    for path in (cut, tmp_path / "lying.wav", EXAMPLES_DIR / "jazz.ogg"):
        said: list[tuple[str, str]] = []
        streamed = np.concatenate(list(decode_stream(path, SR, on_warning=lambda code, message, said=said: said.append((code, message)))))
        offline = load_audio(path, SR)
        assert len(streamed) == len(offline.samples)
        assert said == [(code, f"{path}: {message}") for code, message in offline.warnings if code == "truncated_input"]
        assert len(said) == (path != EXAMPLES_DIR / "jazz.ogg")

"""Decoding: every common format, bytes and file objects, and a clear error for each bad input."""

import io
import os
import wave


import av
import numpy as np
import pytest

from acousticsense.audio import AudioError, load_audio
from acousticsense.errors import ParameterError
from conftest import ENCODINGS, music_like, video, write_audio

SR = 22050


@pytest.mark.parametrize("ext", sorted(ENCODINGS))
def test_formats_decode_to_mono_float32_at_model_rate(tmp_path, ext):
    src_sr = 48000 if ext == ".opus" else 44100
    path = write_audio(tmp_path / f"clip{ext}", music_like(3.0, src_sr, channels=2), src_sr)
    audio = load_audio(path, SR)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.source_sample_rate == src_sr and audio.source_channels == 2
    assert abs(audio.duration - 3.0) < 0.1  # codecs add at most a frame of padding
    assert 0.2 < np.abs(audio.samples).max() <= 1.0


def test_resampled_tone_keeps_its_pitch(tmp_path):
    sr = 48000
    t = np.arange(2 * sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    audio = load_audio(write_audio(tmp_path / "tone.flac", tone[None], sr), SR)
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert abs(np.argmax(spectrum) * SR / len(audio.samples) - 1000) < 2



@pytest.mark.parametrize("ext", [".ogg", ".mp3"])
def test_resampling_in_blocks_gives_what_frame_by_frame_gives(tmp_path, ext):
    """Decoding queues codec frames and hands FFmpeg's resampler 65,536 values at a time (twice as fast): the
    samples must be exactly those of feeding it one codec frame at a time."""
    path = write_audio(tmp_path / f"clip{ext}", music_like(8.0, 44100, channels=2), 44100)
    expected = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SR)
        for frame in [*container.decode(audio=0), None]:
            if frame is not None:
                frame.pts = None
            expected += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    np.testing.assert_array_equal(load_audio(path, SR).samples, np.concatenate(expected))

def test_bytes_and_file_objects(clip_mp3):
    data = clip_mp3.read_bytes()
    a = load_audio(clip_mp3, SR).samples
    assert np.array_equal(load_audio(data, SR).samples, a)
    with open(clip_mp3, "rb") as f:
        assert np.array_equal(load_audio(f, SR).samples, a)
    assert np.array_equal(load_audio(io.BytesIO(data), SR).samples, a)


def test_max_seconds_caps_and_warns(clip_mp3):
    audio = load_audio(clip_mp3, SR, max_seconds=2.0)
    assert len(audio.samples) == 2 * SR and audio.truncated
    assert [c for c, _ in audio.warnings] == ["truncated"]


def test_multichannel_and_low_rate(tmp_path):
    six = load_audio(write_audio(tmp_path / "six.wav", music_like(1.0, 96000, channels=6), 96000), SR)
    assert six.source_channels == 6 and six.source_sample_rate == 96000 and abs(six.duration - 1.0) < 0.01
    low = load_audio(write_audio(tmp_path / "low.wav", music_like(1.0, 8000), 8000), SR)
    assert low.source_sample_rate == 8000 and "low_sample_rate" in [c for c, _ in low.warnings]


@pytest.mark.parametrize("channels", [9, 64])
def test_unnamed_channel_layouts_are_averaged(tmp_path, channels):
    """FFmpeg has no remix matrix for e.g. 9 or 64 channels without a layout: they are averaged to mono."""
    tone = 0.9 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)
    frames = np.zeros((SR, channels))
    frames[:, 0] = tone  # one loud channel, the rest silent: the average is tone / channels
    path = tmp_path / "many.wav"
    path.write_bytes(_pcm_wav(frames, channels))
    audio = load_audio(path, SR)
    assert audio.source_channels == channels and len(audio.samples) == SR
    assert np.sqrt(np.mean(audio.samples**2)) == pytest.approx(0.9 / np.sqrt(2) / channels, rel=0.01)


def test_more_channels_than_ffmpeg_reads_says_so(tmp_path):
    path = tmp_path / "many.wav"
    path.write_bytes(_pcm_wav(np.zeros((100, 513)), 513))
    with pytest.raises(AudioError, match=r"many\.wav: cannot decode audio \(.*no channel count FFmpeg accepts \(1 to 512\) was found\)"):
        load_audio(path, SR)


def _pcm_wav(frames: np.ndarray, channels: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((frames * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _float_wav(path, samples):
    """A 32-bit float WAV (format tag 3) written by hand: the stdlib writes only PCM."""
    data = samples.astype("<f4").tobytes()
    fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + SR.to_bytes(4, "little")
    fmt += (SR * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(data).to_bytes(4, "little") + data
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    return path


def test_tags_that_are_not_utf8_do_not_fail_the_file(tmp_path):
    """A WAV whose INFO title is Latin-1 bytes (PyAV before 19 failed such a file when it opened it)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SR)
        w.writeframes((music_like(1.0)[0] * 16000).astype("<i2").tobytes())
    title = b"\xff\xfe caf\xe9\x00"
    info = b"INFO" + b"INAM" + len(title).to_bytes(4, "little") + title
    data = buf.getvalue() + b"LIST" + len(info).to_bytes(4, "little") + info
    path = tmp_path / "latin1.wav"
    path.write_bytes(data[:4] + (len(data) - 8).to_bytes(4, "little") + data[8:])
    assert abs(load_audio(path, SR).duration - 1.0) < 1e-3


def test_float_wav_round_trip_and_nan(tmp_path):
    x = music_like(1.0)[0]
    assert np.allclose(load_audio(_float_wav(tmp_path / "ok.wav", x), SR).samples, x, atol=1e-6)
    x[100] = np.nan
    x[200] = np.inf
    with pytest.raises(AudioError, match=r"bad\.wav: contains 2 NaN or infinite samples"):
        load_audio(_float_wav(tmp_path / "bad.wav", x), SR)


def _truncated(path, keep=0.1):
    data = path.read_bytes()
    path.write_bytes(data[: max(64, int(len(data) * keep))])
    return path


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing": (lambda d: d / "nope.mp3", "nope.mp3: file not found"),
    "empty_path": (lambda d: "", "'' (an empty path): file not found"),  # was ": file not found"
    "empty": (lambda d: _file(d / "empty.wav", b""), "empty.wav: empty input (0 bytes)"),
    "text_as_mp3": (lambda d: _file(d / "notes.mp3", b"hello, I am not music\n" * 20), "notes.mp3: not a readable audio file"),
    "directory": (lambda d: d, "is a directory"),
    "video_only": (lambda d: video(d / "video.mp4", with_audio=False), "video.mp4: contains no audio stream"),
    "truncated_header_wav": (lambda d: _truncated(write_audio(d / "cut.wav", music_like(1.0), SR), 0.0), "cut.wav: "),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_one_line_error_naming_the_file(tmp_path, case):
    make, expected = BAD_INPUTS[case]
    with pytest.raises(AudioError) as err:
        load_audio(make(tmp_path), SR)
    message = str(err.value)
    assert expected in message and "\n" not in message


@pytest.mark.parametrize("ext", [".wav", ".mp3"])
def test_a_file_cut_short_says_so(tmp_path, ext):
    path = _truncated(write_audio(tmp_path / f"half{ext}", music_like(8.0, SR), SR), keep=0.5)
    audio = load_audio(path, SR)
    assert 3.0 < audio.duration < 5.0
    [(code, message)] = audio.warnings
    assert code == "truncated_input" and "announces 8.0 s" in message and f"only {audio.duration:.1f} s decode" in message
    whole = load_audio(write_audio(tmp_path / f"whole{ext}", music_like(8.0, SR), SR), SR)
    assert whole.warnings == []


@pytest.mark.parametrize("ext", [".ogg", ".opus"])
def test_an_ogg_file_cut_short_says_so_without_a_declared_length(tmp_path, ext):
    """Ogg headers give no duration: a cut file shows by its missing end-of-stream page (read from the file's end only)."""
    whole = write_audio(tmp_path / f"whole{ext}", music_like(8.0, 48000, channels=2), 48000)
    assert load_audio(whole, SR).warnings == []
    half = whole.read_bytes()[: whole.stat().st_size // 2]
    audio = load_audio(half, SR)
    [(code, message)] = audio.warnings
    assert code == "truncated_input" and f"stops after {audio.duration:.1f} s without its end-of-stream page" in message

    class Pipe:  # a stream that cannot seek: its end is never read ahead, so nothing is claimed
        def __init__(self, data: bytes):
            self.read = io.BytesIO(data).read

    assert load_audio(Pipe(half), SR).warnings == []


def test_streaming_wav_sizes_claim_nothing(tmp_path):
    x = (music_like(1.0)[0] * 32767).astype("<i2")
    for declared in (0, 0xFFFFFFFF):
        path = tmp_path / f"stream{declared}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(SR), w.writeframes(x.tobytes())
        data = bytearray(path.read_bytes())
        data[data.index(b"data") + 4 : data.index(b"data") + 8] = declared.to_bytes(4, "little")
        path.write_bytes(bytes(data))
        assert [c for c, _ in load_audio(path, SR).warnings] == []


def test_a_float_wav_header_that_lies_about_its_length_says_so(tmp_path):
    """A float (IEEE) WAV, with a JUNK chunk (odd size, padded) before its data, whose data size claims ~24,000 s of the 2 s it holds."""
    x = music_like(2.0)[0].astype("<f4").tobytes()
    fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + SR.to_bytes(4, "little") + (SR * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"JUNK" + (3).to_bytes(4, "little") + b"abc\0"
    for size, expected in ((len(x), []), (0x7FFFFFFF, ["truncated_input"])):
        path = tmp_path / f"float{size}.wav"
        path.write_bytes(b"RIFF" + (len(body) + 8 + len(x)).to_bytes(4, "little") + body + b"data" + size.to_bytes(4, "little") + x)
        audio = load_audio(path, SR)
        assert audio.duration == pytest.approx(2.0) and [c for c, _ in audio.warnings] == expected
        if expected:
            assert "announces 24347.9 s but only 2.0 s decode" in audio.warnings[0][1]


def test_a_wav_block_size_field_that_is_wrong_claims_no_false_length(tmp_path):
    """16-bit stereo PCM whose fmt chunk says 2 bytes per frame (it is 4), then a second fmt chunk at another rate:
    FFmpeg sizes frames from channels x bits and reads the first fmt chunk; the declared length follows it."""
    x = (np.repeat(music_like(2.0)[0], 2) * 32767).astype("<i2").tobytes()
    def fmt(rate: int) -> bytes:
        body = (1).to_bytes(2, "little") + (2).to_bytes(2, "little") + rate.to_bytes(4, "little") + (rate * 4).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
        return b"fmt " + len(body).to_bytes(4, "little") + body
    body = b"WAVE" + fmt(SR) + fmt(8000) + b"data" + len(x).to_bytes(4, "little") + x
    path = tmp_path / "odd_block.wav"
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)
    audio = load_audio(path, SR)
    assert audio.duration == pytest.approx(2.0) and audio.warnings == []


def test_corrupt_data_mid_file_is_a_decode_error_warning(tmp_path):
    path = write_audio(tmp_path / "c.flac", music_like(8.0, 44100, channels=2), 44100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # FLAC frames stop mid-way: the decoder reports an error
    audio = load_audio(path, SR)
    [(code, message)] = audio.warnings
    assert code == "decode_error" and f"after {audio.duration:.1f} s of the 8.0 s announced" in message
    assert audio.duration > 3.5  # about half the file decodes; what the resampler held back is kept too
    capped = load_audio(path, SR, max_seconds=3.5)  # the corrupt part lies just past the cap: only the cut is reported
    assert len(capped.samples) == int(3.5 * SR) and [c for c, _ in capped.warnings] == ["truncated"]


def test_a_corrupt_packet_mid_file_is_skipped_and_the_rest_decodes(tmp_path):
    """One damaged stretch (a bad sector, a broken download chunk) costs its own packets, not the rest of the track."""
    path = write_audio(tmp_path / "c.mp3", music_like(20.0, 44100, channels=2), 44100)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2048] = np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    audio = load_audio(path, SR)
    assert audio.duration > 19.0
    [(code, message)] = audio.warnings
    assert code == "decode_error" and message.startswith("skipped ") and "decoded the rest" in message


def test_garbage_a_decoder_lets_through_after_corrupt_data_is_skipped_too(tmp_path, monkeypatch):
    """0.2 % of an mp3's bytes randomised: some damaged frames decode without an error into samples thousands of
    times full scale, which would scale the whole track down to silence; after corrupt data they are skipped."""
    path = write_audio(tmp_path / "c.mp3", music_like(30.0, 44100, channels=2), 44100)
    data = np.frombuffer(path.read_bytes(), np.uint8).copy()
    rng = np.random.default_rng(0)
    hit = rng.choice(len(data), len(data) // 500, replace=False)
    data[hit] = rng.integers(0, 256, len(hit), dtype=np.uint8)
    path.write_bytes(data.tobytes())
    audio = load_audio(path, SR)
    assert [code for code, _ in audio.warnings] == ["decode_error"] and audio.duration > 25
    assert np.abs(audio.samples).max() <= 16.0
    if int(av.__version__.split(".")[0]) < 19:  # with the FFmpeg in PyAV 19 this damage decodes to no such garbage
        monkeypatch.setattr("acousticsense.audio.CORRUPT_PEAK", float("inf"))  # what happened without the check
        assert "extreme_level" in [code for code, _ in load_audio(path, SR).warnings]


def test_sample_rate_change_mid_stream(tmp_path):
    """Concatenated ADTS AAC (44.1 kHz, then 22.05 kHz): the resampler follows, nothing is lost."""
    parts = [write_audio(tmp_path / f"{rate}.aac", music_like(2.0, rate, channels=2), rate).read_bytes() for rate in (44100, 22050)]
    audio = load_audio(b"".join(parts), SR)
    assert 3.9 < audio.duration < 4.3


def test_lying_sample_rate_is_refused(tmp_path):
    x = (music_like(1.0)[0] * 32767).astype("<i2")
    with wave.open(str(tmp_path / "slow.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(1), w.writeframes(x.tobytes())
    with pytest.raises(AudioError, match=r"slow\.wav: sample rate 1 Hz is not plausible"):
        load_audio(tmp_path / "slow.wav", SR)


def test_huge_float_samples_are_scaled_not_nan(tmp_path):
    x = music_like(1.0)[0]
    audio = load_audio(_float_wav(tmp_path / "loud.wav", x * 1e20), SR)
    assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() == pytest.approx(1.0)
    assert np.allclose(audio.samples, x / np.abs(x).max(), atol=1e-6)
    assert [c for c, _ in audio.warnings] == ["extreme_level"]


@pytest.mark.parametrize("name", ["Live: take 1.wav", "http:song.wav", "file:x.wav", "música 'ñ'.wav"])
def test_names_are_paths_never_urls_or_protocols(tmp_path, name):
    x = (music_like(1.0)[0] * 32767).astype("<i2")
    with wave.open(str(tmp_path / name), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SR), w.writeframes(x.tobytes())
    assert abs(load_audio(tmp_path / name, SR).duration - 1.0) < 0.01


def test_special_files_say_what_they_are(tmp_path):
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    with pytest.raises(AudioError, match="loop.wav: cannot open .Too many levels of symbolic links"):
        load_audio(tmp_path / "loop.wav", SR)
    with pytest.raises(AudioError, match="/dev/zero: is a device"):
        load_audio("/dev/zero", SR)
    r, w = os.pipe()
    os.close(w)  # an empty pipe
    with os.fdopen(r, "rb") as empty, pytest.raises(AudioError, match="empty input"):
        load_audio(empty, SR)


def test_empty_bytes_and_bad_array():
    with pytest.raises(AudioError, match="<bytes>: empty input"):
        load_audio(b"", SR)
    with pytest.raises(AudioError, match="<array>: expected a mono waveform"):
        load_audio(np.zeros((2, 100), np.float32), SR)
    with pytest.raises(AudioError, match="<array>: contains 1 NaN"):
        load_audio(np.array([0.0, np.nan], np.float32), SR)
    for wrong, kind in ((12345, "int"), (None, "NoneType"), ([0.1, 0.2], "list")):
        with pytest.raises(AudioError, match=f"<{kind}>: not an audio source"):
            load_audio(wrong, SR)


def test_pcm_wav_from_stdlib_decodes_exactly(tmp_path):
    x = (music_like(0.5)[0] * 32767).astype("<i2")
    with wave.open(str(tmp_path / "pcm.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SR), w.writeframes(x.tobytes())
    assert np.allclose(load_audio(tmp_path / "pcm.wav", SR).samples, x / 32768.0, atol=1e-6)
    two = write_audio(tmp_path / "two.wav", np.array([[0.5, -0.5]], np.float32), 48000)  # some samples, none once resampled
    with pytest.raises(AudioError, match=r"two.wav: contains no audio samples, or too few to give one at 22,050 Hz \(it is 48,000 Hz\)"):
        load_audio(two, SR)


@pytest.mark.parametrize("name", ["empty.mp3", "empty.ogg", "empty.wav"])
def test_an_empty_file_is_one_line_and_no_traceback(tmp_path, capfd, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(AudioError, match=f"{name}: empty input"):
        load_audio(tmp_path / name, SR)
    assert "Traceback" not in capfd.readouterr().err


def test_arrays_must_hold_float_samples_and_streams_be_binary():
    """Integers would be read as samples far beyond full scale, complex or text values cast away: all refused, by name."""
    with pytest.raises(AudioError, match=r"<array>: expected float samples in \[-1, 1\], got int16 values \(divide by 32768"):
        load_audio(np.zeros(100, np.int16), SR)
    for bad in (np.zeros(100, complex), np.array(["a", "b"]), np.zeros(100, np.uint8)):
        with pytest.raises(AudioError, match="expected float samples"):
            load_audio(bad, SR)
    with pytest.raises(AudioError, match="a text stream; audio is read from a binary one"):
        load_audio(io.StringIO("RIFF"), SR)
    assert load_audio(np.zeros(100, np.float16), SR).duration == pytest.approx(100 / SR)


@pytest.mark.parametrize("rate", [None, 0, -1, 22050.0, "22050", True, 10**9])
def test_a_sample_rate_asked_for_that_is_not_one_is_a_parameter_error(clip_mp3, rate):
    for source in (clip_mp3, np.zeros(100, np.float32)):
        with pytest.raises(ParameterError, match=r"sample_rate must be a whole number of Hz from 1 to 768,000, not"):
            load_audio(source, rate)
    assert load_audio(clip_mp3, np.int64(16000)).sample_rate == 16000


def test_decoding_options_that_make_no_sense_are_parameter_errors(clip_mp3):
    """NaN, inf or negative max_seconds failed deep inside (or, for an array, returned all of it with a warning
    of "-1 s"); 1e9 s tried to reserve 80 TiB; an unknown resampler was FFmpeg's without a word."""
    for source in (clip_mp3, np.zeros(SR, np.float32)):
        for max_seconds in (float("nan"), float("inf"), -1, 0, 1e9, "10", True):
            with pytest.raises(ParameterError, match="max_seconds must be a number from 1 to 14400 s"):
                load_audio(source, SR, max_seconds)
        with pytest.raises(ParameterError, match="resampler must be one of ffmpeg, soxr_hq, not 'bogus'"):
            load_audio(source, SR, 10, "bogus")


def test_an_array_is_cut_before_it_is_copied():
    long = np.zeros(60 * SR, np.float64)
    audio = load_audio(long, SR, max_seconds=2.0)
    assert audio.samples.dtype == np.float32 and len(audio.samples) == 2 * SR and audio.truncated
    assert not load_audio(long[: 2 * SR], SR, max_seconds=2.0).truncated


def test_a_name_with_a_nul_character_is_an_audio_error():
    with pytest.raises(AudioError, match="not a usable file name \\(it holds a NUL character\\)"):
        load_audio("/tmp/a\0b.wav", SR)


def test_a_closed_file_or_a_read_that_gives_no_bytes_says_so(clip_mp3):
    with open(clip_mp3, "rb") as f:
        pass
    with pytest.raises(AudioError, match="clip.mp3: the file object is closed"):
        load_audio(f, SR)

    class NonBlocking:
        def read(self, n=-1):
            return None  # what a non-blocking stream gives when nothing has arrived

    with pytest.raises(AudioError, match=r"its read\(\) gave NoneType, not bytes"):
        load_audio(NonBlocking(), SR)

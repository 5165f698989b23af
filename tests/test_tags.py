"""Genre tags: written into every taggable format without touching the audio, and never at the original's risk."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mutagen
import numpy as np
import pytest

from acousticsense import tags
from acousticsense.audio import load_audio
from acousticsense.tags import TEMP_PREFIX, TagError, read_genre, remove_stale_temps, write_genre
from conftest import write_audio

SR = 22050


def sine(path: Path, seconds: float = 1.0) -> Path:
    """A stereo 440 Hz sine (with a 660 Hz overtone on the right) encoded to ``path``; the format follows the extension."""
    sr = 48000 if path.suffix == ".opus" else 44100
    t = np.arange(int(seconds * sr)) / sr
    return write_audio(path, np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)]), sr)


def decoded(path: Path) -> np.ndarray:
    return load_audio(path, SR, max_seconds=None).samples


@pytest.mark.parametrize("ext", [".ogg", ".opus", ".flac", ".mp3", ".m4a", ".wav", ".aiff"])
def test_genre_is_written_and_the_audio_is_untouched(tmp_path, ext):
    path = sine(tmp_path / f"song{ext}")
    before = decoded(path)
    assert read_genre(path) is None
    path.chmod(0o640)

    write_genre(path, "Jazz")

    assert read_genre(path) == "Jazz"
    plain = mutagen.File(path)  # the native tag, as other players read it
    native = {".mp3": "TCON", ".m4a": "©gen", ".wav": "TCON", ".aiff": "TCON"}.get(ext, "genre")
    assert (plain.tags["TCON"].text if native == "TCON" else plain.tags[native]) == ["Jazz"]
    after = decoded(path)
    assert len(after) == len(before) and np.allclose(after, before, atol=1e-6)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == [path.name]  # no temp left behind

    write_genre(path, "Hip-Hop")  # a second write replaces the genre, it does not add one
    assert read_genre(path) == "Hip-Hop"
    assert mutagen.File(path, easy=True).tags.get("genre", ["Hip-Hop"]) == ["Hip-Hop"]
    assert np.allclose(decoded(path), before, atol=1e-6)


def test_unicode_genre_round_trips(tmp_path):
    path = sine(tmp_path / "song.flac")
    write_genre(path, "Música Popular Brasileira – ボサノヴァ")
    assert read_genre(path) == "Música Popular Brasileira – ボサノヴァ"


def unchanged(path: Path, data: bytes) -> bool:
    """``path`` still holds exactly ``data`` and is alone in its folder (no temp copy left)."""
    return path.read_bytes() == data and os.listdir(path.parent) == [path.name]


def test_not_audio_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "x.mp3"
    path.write_bytes(data := np.random.default_rng(0).bytes(20_000))
    with pytest.raises(TagError, match=r"x\.mp3: not (a taggable audio file|decodable audio)"):
        write_genre(path, "Rock")
    assert unchanged(path, data)
    with pytest.raises(TagError, match="not a taggable audio file"):
        read_genre(path)


def test_tagged_but_undecodable_file_is_refused(tmp_path):
    path = sine(tmp_path / "cut.flac")
    path.write_bytes(data := path.read_bytes()[:9000])  # valid FLAC headers, the audio cut off mid-frame
    assert mutagen.File(path) is not None
    with pytest.raises(TagError, match=r"cut\.flac: not decodable audio"):
        write_genre(path, "Rock")
    assert unchanged(path, data)


def test_format_without_tags_is_refused(tmp_path):
    path = sine(tmp_path / "raw.aac")  # ADTS AAC: no tag container
    data = path.read_bytes()
    with pytest.raises(TagError, match=r"raw\.aac: AAC files cannot carry tags"):
        write_genre(path, "Rock")
    assert unchanged(path, data)


@pytest.mark.parametrize("genre", ["", "   ", "Rock\nRoll", "a\x00b"])
def test_invalid_genre_is_refused(tmp_path, genre):
    path = sine(tmp_path / "song.flac")
    data = path.read_bytes()
    with pytest.raises(TagError, match="invalid genre"):
        write_genre(path, genre)
    assert unchanged(path, data)


def test_symlink_is_refused(tmp_path):
    target = sine(tmp_path / "real.flac")
    data = target.read_bytes()
    link = tmp_path / "link.flac"
    link.symlink_to(target)
    with pytest.raises(TagError, match=r"link\.flac: is a symlink"):
        write_genre(link, "Rock")
    assert link.is_symlink() and target.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["link.flac", "real.flac"]


def test_read_only_and_hard_linked_files_are_left_alone(tmp_path):
    """Replacing the file by a tagged copy needs only the folder writable: the file's own permission is asked too,
    and a second hard link would keep the untagged file (two copies where there was one)."""
    read_only = sine(tmp_path / "ro.flac")
    read_only.chmod(0o444)
    with pytest.raises(TagError, match=r"ro\.flac: is read-only; left unchanged"):
        write_genre(read_only, "Rock")
    linked = sine(tmp_path / "a.flac")
    os.link(linked, tmp_path / "b.flac")
    with pytest.raises(TagError, match=r"a\.flac: has 2 hard links; tagging would split them"):
        write_genre(linked, "Rock")
    assert read_genre(read_only) is None and read_genre(linked) is None and os.stat(linked).st_nlink == 2
    assert sorted(os.listdir(tmp_path)) == ["a.flac", "b.flac", "ro.flac"]


def test_the_tagged_file_keeps_its_owner_group_and_mode(tmp_path):
    path = sine(tmp_path / "mine.flac")
    path.chmod(0o640)
    if os.geteuid() == 0:  # root can give the file another group, as a shared music folder has
        os.chown(path, -1, 12345)
    before = os.stat(path)
    write_genre(path, "Jazz")
    after = os.stat(path)
    assert read_genre(path) == "Jazz" and after.st_ino != before.st_ino
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (before.st_uid, before.st_gid, 0o640)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(TagError, match="cannot open"):
        write_genre(tmp_path / "nope.mp3", "Rock")
    with pytest.raises(TagError, match="not a regular file"):
        write_genre(tmp_path, "Rock")
    assert os.listdir(tmp_path) == []


def test_file_changed_during_write_is_not_overwritten(tmp_path, monkeypatch):
    path = sine(tmp_path / "song.mp3")
    real = tags._set_genre

    def meanwhile(audio, genre, name):  # another program rewrites the file while the tag is being written
        path.write_bytes(path.read_bytes() + b"\0" * 10)
        real(audio, genre, name)

    monkeypatch.setattr(tags, "_set_genre", meanwhile)
    data = None
    with pytest.raises(TagError, match="changed while its tag was being written"):
        try:
            write_genre(path, "Rock")
        finally:
            data = path.read_bytes()
    assert unchanged(path, data) and data.endswith(b"\0" * 10)  # the other program's version stays


def test_audio_that_decodes_differently_is_not_written(tmp_path, monkeypatch):
    path = sine(tmp_path / "song.flac")
    data = path.read_bytes()
    calls = iter([np.zeros(100, np.float32), np.ones(100, np.float32)])
    monkeypatch.setattr(tags, "_decode", lambda tmp, name: next(calls))
    with pytest.raises(TagError, match="decodes differently"):
        write_genre(path, "Rock")
    assert unchanged(path, data)


def test_remove_stale_temps_only_removes_temps_here(tmp_path):
    (tmp_path / f"{TEMP_PREFIX}a.mp3.x1").write_bytes(b"1")
    (tmp_path / f"{TEMP_PREFIX}b.flac.x2").write_bytes(b"2")
    (tmp_path / "keep.mp3").write_bytes(b"3")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / f"{TEMP_PREFIX}c.ogg.x3").write_bytes(b"4")
    (tmp_path / f"{TEMP_PREFIX}dir").mkdir()
    assert remove_stale_temps(tmp_path) == 2
    assert sorted(os.listdir(tmp_path)) == [f"{TEMP_PREFIX}dir", "keep.mp3", "sub"]
    assert os.listdir(tmp_path / "sub") == [f"{TEMP_PREFIX}c.ogg.x3"]
    assert remove_stale_temps(tmp_path) == 0


# Run in a child process that parks inside write_genre (after writing a marker file) until it is SIGKILLed.
PARK = {
    # the temp copy is complete, tagged and fsynced: killed just before the atomic replace
    "before_replace": """
        def parked(src, dst):
            marker.write_text(src)
            time.sleep(30)
        tags.os.replace = parked
    """,
    # killed while mutagen is rewriting the temp copy: it is left half written
    "during_save": """
        real_open = tags._open
        def opened(p, name):
            audio = real_open(p, name)
            def save(*args, **kwargs):
                size = os.path.getsize(audio.filename)
                with open(audio.filename, "r+b") as f:
                    f.truncate(size // 2)
                    f.flush()
                    os.fsync(f.fileno())
                marker.write_text(audio.filename)
                time.sleep(30)
            audio.save = save
            return audio
        tags._open = opened
    """,
}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("ext", [".mp3", ".m4a"])
@pytest.mark.parametrize("stage", sorted(PARK))
def test_kill_mid_write_leaves_the_original_intact(tmp_path, stage, ext):
    folder = tmp_path / "music"
    folder.mkdir()
    path = sine(folder / f"song{ext}")
    write_genre(path, "Blues")
    data, samples = path.read_bytes(), decoded(path)
    marker = tmp_path / "parked"
    code = "import os, sys, time\nfrom pathlib import Path\nfrom acousticsense import tags\nmarker = Path(sys.argv[1])\n"
    code += textwrap.dedent(PARK[stage]) + "tags.write_genre(sys.argv[2], 'Jazz')\n"
    proc = subprocess.Popen([sys.executable, "-c", code, str(marker), str(path)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), f"the child never reached the write: {proc.stderr.read().decode() if proc.poll() is not None else 'timeout'}"
        time.sleep(0.05)  # the marker is written before the child parks
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    temp = Path(marker.read_text())
    assert temp.parent == folder and temp.name.startswith(TEMP_PREFIX) and temp.exists()
    assert path.read_bytes() == data  # byte for byte
    assert read_genre(path) == "Blues"
    assert np.array_equal(decoded(path), samples)
    assert remove_stale_temps(folder) == 1
    assert os.listdir(folder) == [path.name]
    write_genre(path, "Jazz")  # and the file can be tagged again afterwards
    assert read_genre(path) == "Jazz"

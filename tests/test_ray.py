"""``scan --engine ray`` stores what the local engine stores, file for file (a local Ray, on CPU)."""

from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from acousticsense.catalog import Catalog
from acousticsense.scan import scan

EXAMPLES = sorted((Path(__file__).parents[1] / "acousticsense" / "assets" / "examples").glob("*.ogg"))

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")  # Ray's own, at import


def library(root: Path) -> Path:
    """Six example tracks in two folders, a file that is not audio, and three seconds of digital silence."""
    for i, src in enumerate(EXAMPLES[:6]):
        folder = root / ("rock" if i % 2 else "jazz")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / src.name)
    (root / "rock" / "broken.mp3").write_bytes(np.random.default_rng(0).bytes(4096))
    with wave.open(str(root / "jazz" / "silence.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(bytes(2 * 3 * 22050))
    return root


def rows(db: Path) -> dict[str, dict]:
    with Catalog(db, create=False) as catalog:
        return {r["path"]: dict(r) for r in catalog.rows()}


def same_results(db_a: Path, db_b: Path) -> dict[str, dict]:
    """Assert two databases hold the same results for the same files; the rows of the first, by path."""
    a, b = rows(db_a), rows(db_b)
    assert set(a) == set(b)
    for path, x in a.items():
        y = b[path]
        assert (x["status"], x["genre"], x["hash"], x["size"]) == (y["status"], y["genre"], y["hash"], y["size"]), path
        if x["status"] == "ok":
            px, py = dict(json.loads(x["top_k"])), dict(json.loads(y["top_k"]))
            assert px.keys() == py.keys(), path
            assert all(abs(px[g] - py[g]) < 1e-4 for g in px), path
            ex, ey = np.frombuffer(x["embedding"], "<f4"), np.frombuffer(y["embedding"], "<f4")
            assert np.allclose(ex, ey, atol=1e-4), path
            assert float(ex @ ey / np.linalg.norm(ex) / np.linalg.norm(ey)) >= 0.9999, path
    return a


@pytest.mark.slow
def test_ray_engine_matches_local(tmp_path):
    lib = library(tmp_path / "lib")
    local_db, ray_db = tmp_path / "local.db", tmp_path / "ray.db"
    local = scan(lib, local_db)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the engine must use this one as it is
    try:
        remote = scan(lib, ray_db, engine="ray")
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert remote.counts == local.counts
    assert (local.counts["found"], local.counts["classified"], local.counts["failed"], local.counts["silent"]) == (8, 6, 1, 1)
    a = same_results(local_db, ray_db)
    broken, silence = str((lib / "rock" / "broken.mp3").resolve()), str((lib / "jazz" / "silence.wav").resolve())
    assert a[broken]["status"] == "failed" and "broken.mp3" in a[broken]["error"]
    assert "broken.mp3" in rows(ray_db)[broken]["error"]
    assert a[silence]["status"] == "silent"

    # A new track: the engine starts a Ray of its own for it, and stops it after.
    shutil.copy(EXAMPLES[6], lib / "jazz" / EXAMPLES[6].name)
    local, remote = scan(lib, local_db), scan(lib, ray_db, engine="ray")
    assert not ray.is_initialized()
    assert remote.counts == local.counts
    assert (local.counts["found"], local.counts["unchanged"], local.counts["classified"]) == (9, 8, 1)
    assert len(same_results(local_db, ray_db)) == 9


def test_sigterm_stops_a_ray_scan_as_an_interruption():
    """Ray's handler printed a C stack dump on SIGTERM; the scan now stops as on Ctrl-C (stored work kept, Ray shut down)."""
    import os
    import signal

    from acousticsense.errors import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    restore = sigterm_as_interrupt()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler as soon as kill returns
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == before

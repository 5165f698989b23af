"""The web page's Live tab: browser microphone chunks → resampled → live rankings, equal to the offline ones."""

import numpy as np
import pytest

from acousticsense.api import Engine
from acousticsense.audio import load_audio
from acousticsense.bundle import EXAMPLES_DIR
from acousticsense.errors import AudioError
from acousticsense.inference import Classifier
from acousticsense.live_ui import live_step, pcm_to_mono, rolling_timeline


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(Classifier.from_bundle(device="cpu"), 600)


def test_microphone_chunks_give_the_offline_rankings(engine):
    clip = EXAMPLES_DIR / "jazz.ogg"
    rate = 22050  # the model's rate: the resampler passes the samples through, so rankings equal the offline ones
    pcm = (load_audio(clip, rate).samples * 32767).astype(np.int16)
    stereo = np.stack([pcm, pcm], axis=1)
    session, updates = None, []
    for i in range(0, len(stereo), rate // 2):  # half-second chunks, as the browser sends them
        session, new = live_step(engine, session, (rate, stereo[i : i + rate // 2]))
        updates += new
    offline = engine.classifier.classify(pcm.astype(np.float32) / 32768.0, hop=1.0)
    assert len(updates) >= 2 and [u.start for u in updates] == [w.start for w in offline.timeline[: len(updates)]]
    assert [u.top_k[0].label for u in updates] == [w.label for w in offline.timeline[: len(updates)]]
    assert updates[-1].smoothed[0].label == "Jazz"
    assert session.live.buffered <= session.live.capacity and len(session.recent) == len(updates)
    assert rolling_timeline(list(session.recent), engine.classifier.labels, 1.0).axes[0].get_title() == "Each window's top genre"


def test_another_rate_starts_a_new_session_and_odd_chunks_are_harmless(engine):
    session, _ = live_step(engine, None, (48000, np.zeros(24000, np.int16)))
    assert session.rate == 48000
    again, updates = live_step(engine, session, (44100, np.zeros(22050, np.int16)))
    assert again is not session and again.rate == 44100 and updates == []
    assert live_step(engine, again, None) == (again, [])
    for rate in (0, 1, -8000, 10**7, 44100.5, True):  # a client can claim any rate: 1 Hz made 22,050 samples of each one
        with pytest.raises(AudioError, match=r"microphone: sample rate .* Hz is not plausible audio"):
            live_step(engine, again, (rate, np.zeros(100, np.int16)))
    with pytest.raises(AudioError, match=r"microphone: a chunk of 11.0 s; the page sends 0.5 s at a time"):
        live_step(engine, again, (8000, np.zeros(88000, np.int16)))
    x = pcm_to_mono(np.array([[np.nan, np.inf], [1.0, -1.0]], np.float32))
    assert x.tolist() == [0.0, 0.0]
    for pcm in (np.array([-128, 64], np.int8), np.array([-32768, 16384], np.int16), np.array([-(2**31), 2**30], np.int32), np.array([0, 192], np.uint8)):
        assert pcm_to_mono(pcm).tolist() == [-1.0, 0.5], pcm.dtype  # every width at full scale (int8 went in unscaled)


def test_a_recording_holds_its_place_for_ten_minutes_at_most(engine):
    """Gradio waits up to the stream's time limit for its next chunk: a visitor who goes quiet without closing
    keeps one of the LIVE_STREAMS places that long (it was an hour), so eight such visitors stop the tab only briefly."""
    import gradio as gr

    from acousticsense.live_ui import LIVE_SECONDS, LIVE_STREAMS, live_tab

    with gr.Blocks() as page:
        live_tab(engine)
    [stream] = [fn for fn in page.fns.values() if fn.connection == "stream"]
    assert stream.time_limit == LIVE_SECONDS <= 600 and stream.concurrency_limit == LIVE_STREAMS

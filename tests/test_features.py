"""Torch features agree with librosa; windows, images and silence behave as documented."""

import librosa
import numpy as np
import pytest
import torch

from acousticsense.errors import ParameterError
from acousticsense.features import (
    Preprocessing,
    db_to_image,
    frames_per_window,
    mel_band_hz,
    mel_filters,
    mel_power,
    power_to_db,
    track_mel,
    window_count,
    window_frames,
    window_levels_db,
    window_starts,
    windows_to_images,
)
from conftest import frame_windows, music_like


def test_each_mel_band_is_labelled_with_its_centre_frequency_whatever_the_preemphasis():
    """The frequency axis the page and explain draw: librosa's band centres, within one FFT bin. Pre-emphasis
    weights the filters' bins but moves no band (the page had drawn 4 of 128 bands elsewhere than explain)."""
    pre = Preprocessing()
    hz = mel_band_hz(pre)
    centres = librosa.mel_frequencies(pre.n_mels + 2, fmin=pre.fmin, fmax=pre.sample_rate / 2)[1:-1]
    assert hz.shape == (pre.n_mels,) and np.abs(hz - centres).max() <= pre.sample_rate / pre.n_fft
    assert np.array_equal(mel_band_hz(Preprocessing(preemphasis=0.97)), hz)
    assert not np.array_equal(mel_filters(Preprocessing(preemphasis=0.97)).argmax(-1).numpy() * pre.sample_rate / pre.n_fft, hz)


@pytest.mark.parametrize("sr,n_fft,hop,n_mels", [(22050, 2048, 512, 128), (16000, 1024, 160, 64)])
def test_mel_db_matches_librosa(sr, n_fft, hop, n_mels):
    y = music_like(4.0, sr, seed=sr)[0]
    pre = Preprocessing(sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    ours = power_to_db(mel_power(torch.from_numpy(y)[None], pre), pre)[0].numpy()
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels), ref=np.max
    )
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 0.01


def test_fixed_reference_db_matches_librosa():
    y = music_like(3.0, seed=5)[0]
    pre = Preprocessing(db_ref=1.0, top_db=None)
    ours = power_to_db(mel_power(torch.from_numpy(y)[None], pre), pre)[0].numpy()
    S = librosa.feature.melspectrogram(y=y, sr=pre.sample_rate, n_fft=pre.n_fft, hop_length=pre.hop_length, n_mels=pre.n_mels)
    assert np.abs(ours - librosa.power_to_db(S, ref=1.0, top_db=None)).max() < 0.01


@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax,htk,norm",
    [(22050, 2048, 128, 0.0, None, False, "slaney"), (16000, 1024, 64, 20.0, 7600.0, False, "slaney"), (44100, 4096, 96, 30.0, 16000.0, True, None)],
)
def test_mel_filter_bank_is_librosas(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    """Ours is computed without librosa (slow to import) and must equal it."""
    pre = Preprocessing(sample_rate=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, mel_htk=htk, mel_norm=norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    assert np.allclose(mel_filters(pre).numpy(), ref, rtol=1e-5, atol=1e-8)


def test_batched_features_equal_single():
    y = torch.from_numpy(music_like(6.0, seed=1)[0])
    pre = Preprocessing(window_seconds=2.0, hop_seconds=1.0)
    windows, _ = frame_windows(y, pre)
    batch = windows_to_images(windows, pre)
    single = torch.cat([windows_to_images(w[None], pre) for w in windows])
    assert torch.allclose(batch, single, atol=1e-5)


def test_windows_to_images_refuses_what_is_not_windows_of_the_model():
    pre = Preprocessing(window_seconds=2.0, hop_seconds=1.0)
    good = torch.from_numpy(music_like(2.0, seed=2)[0])[None]
    for bad in (good[:, :100], good[:0], good[0], good[None], good.numpy(), (good * 32768).long()):
        with pytest.raises(ParameterError, match=rf"windows_to_images takes a float tensor of windows \(B >= 1, {pre.window_samples} samples each\)"):
            windows_to_images(bad, pre)
    with pytest.raises(ParameterError, match="hold NaN or infinite samples"):
        windows_to_images(torch.where(torch.arange(good.shape[1]) == 5, float("nan"), good), pre)
    with pytest.raises(ParameterError, match="needs the model's Preprocessing, not NoneType"):
        windows_to_images(good, None)


def test_a_big_plot_is_drawn_a_few_windows_at_a_time_with_the_same_pixels(monkeypatch):
    """A bundle's render_size of 4096 x 4096 (magma) cost 200 MB per window, 13 GB for a batch of 64."""
    import acousticsense.features as features

    pre = Preprocessing(window_seconds=2.0, hop_seconds=1.0, colormap="magma", render_size=(300.0, 400.0), image_size=64)
    db = power_to_db(mel_power(frame_windows(torch.from_numpy(music_like(6.0, seed=3)[0]), pre)[0], pre), pre)
    whole = db_to_image(db, pre)
    monkeypatch.setattr(features, "RENDER_BYTES", 2 * 4 * 3 * 300 * 400)  # two windows at a time
    assert len(db) > 2 and torch.equal(db_to_image(db, pre), whole)


def test_preprocessing_takes_lists_and_keeps_tuples():
    pre = Preprocessing(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], render_size=[369, 496])
    assert pre.mean == (0.485, 0.456, 0.406) and pre.render_size == (369.0, 496.0) and hash(pre) == hash(Preprocessing.from_dict(pre.to_dict()))
    for bad in (dict(mean=5), dict(render_size=5), dict(std=None)):
        with pytest.raises(ParameterError, match="must be a list of numbers"):
            Preprocessing(**bad)


def test_frame_windows_covers_track_and_aligns_last_window():
    pre = Preprocessing(sample_rate=100, window_seconds=1.0, hop_seconds=0.5)
    windows, starts = frame_windows(torch.arange(260.0), pre)
    assert starts.tolist() == [0, 50, 100, 150, 160]  # last window ends exactly at the end
    assert windows.shape == (5, 100)
    assert windows[-1, -1] == 259 and windows[1, 0] == 50


def test_short_clip_fills_one_window():
    x = torch.arange(1.0, 31.0)
    repeat = Preprocessing(sample_rate=100, window_seconds=1.0, hop_seconds=0.5, short_pad="repeat")
    windows, starts = frame_windows(x, repeat)
    assert windows.shape == (1, 100) and starts.tolist() == [0]
    assert torch.equal(windows[0], torch.cat([x, x, x, x[:10]]))  # the clip over and over, cut at the window's end
    zeros = repeat.replace(short_pad="zeros")
    windows, _ = frame_windows(x, zeros)
    assert torch.equal(windows[0, :30], x) and torch.count_nonzero(windows[0, 30:]) == 0 and windows.shape == (1, 100)


def test_window_starts_count_and_frames_agree():
    pre = Preprocessing(sample_rate=100, window_seconds=1.0, hop_seconds=0.3)
    x = torch.arange(1000.0)
    for n in (100, 101, 129, 130, 131, 999):
        starts = window_starts(n, pre)
        assert window_count(n, pre) == len(starts) and starts[-1] + 100 == n and starts[0] == 0
        assert torch.equal(frame_windows(x[:n], pre)[0][:, 0], starts.float())


def test_image_shape_range_and_orientation():
    pre = Preprocessing(image_size=64)
    db = torch.zeros(2, 128, 200)
    db[:, :10] = 10.0  # loud low frequencies (mel bin 0 is the lowest)
    img = db_to_image(db, pre)
    assert img.shape == (2, 3, 64, 64)
    assert torch.allclose(img[:, 0], img[:, 1]) and torch.allclose(img[:, 0], img[:, 2])  # grey x3
    x = img * 0.5 + 0.5  # undo Normalize(0.5, 0.5)
    assert x.min() >= -1e-5 and x.max() <= 1 + 1e-5
    assert x[:, :, -1].mean() > 0.99 and x[:, :, 0].mean() < 0.01  # low frequencies at the bottom


def test_magma_colormap_matches_matplotlib():
    from matplotlib import colormaps

    pre = Preprocessing(image_size=8, colormap="magma", mean=(0, 0, 0), std=(1, 1, 1), flip_frequency=False)
    db = torch.linspace(0, 1, 64).reshape(1, 8, 8)
    img = db_to_image(db, pre)[0].permute(1, 2, 0).numpy()
    ref = colormaps["magma"](db[0].numpy())[..., :3]
    assert np.abs(img - ref).max() < 0.02


def test_silence_level():
    pre = Preprocessing(sample_rate=1000, window_seconds=1.0, hop_seconds=0.5, hop_length=100, n_fft=256)
    first = torch.tensor([0, 10])  # frames: windows at 0 s and 1 s
    quiet_then_loud = torch.cat([torch.full((1000,), 1e-4), torch.from_numpy(music_like(1.0, 1000)[0])])
    quiet, loud = window_levels_db(quiet_then_loud, first, pre).tolist()
    assert quiet == pytest.approx(-80.0, abs=0.01) and loud > -30
    assert window_levels_db(torch.zeros(2000), first, pre).tolist() == pytest.approx([-200.0, -200.0])


def test_whole_track_mel_in_chunks_and_its_window_slices():
    """Inference cuts windows out of one whole-track mel: chunking changes nothing, slices match their windows."""
    pre = Preprocessing(window_seconds=2.0, hop_seconds=1.0)
    x = torch.from_numpy(music_like(7.3, seed=3)[0])
    mel = track_mel(x, pre, chunk_frames=37)
    assert torch.allclose(mel, mel_power(x[None], pre)[0], rtol=1e-4, atol=1e-6)
    starts = window_starts(len(x), pre)
    frames = window_frames(starts, len(x), pre)
    width = frames_per_window(pre)
    assert int(frames[-1]) + width == mel.shape[1]  # the last window ends with the track
    assert (frames * pre.hop_length - starts).abs().max() <= pre.hop_length // 2
    own = windows_to_images(frame_windows(x, pre)[0], pre)
    sliced = db_to_image(power_to_db(torch.stack([mel[:, f : f + width] for f in frames.tolist()]), pre), pre)
    # what the model sees barely differs (on a [-1, 1] scale): edge frames see context instead of padding, and
    # a start off the frame grid moves to the nearest frame (up to 11.6 ms), as training's random crops are placed
    assert (own - sliced).abs().mean(dim=(1, 2, 3)).max() < 0.06


def test_preprocessing_round_trip_and_strictness():
    pre = Preprocessing(window_seconds=5.0, colormap="magma")
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    with pytest.raises(ParameterError, match="unknown preprocessing parameters: colour"):
        Preprocessing.from_dict({"colour": "red"})
    with pytest.raises(ParameterError, match="short_pad"):
        Preprocessing(short_pad="mirror")
    for bad in (float("inf"), float("nan"), 0.0, -1.0, 1e-9, "8"):
        with pytest.raises(ParameterError, match="window_seconds"):
            Preprocessing(window_seconds=bad)


def test_preemphasis_is_the_filtered_signals_mel():
    """The preemphasis option (a gain per FFT bin) gives the mel of x[n] - a x[n-1], without filtering the samples."""
    x = torch.from_numpy(music_like(3.0, 22050, seed=4)[0])
    y = torch.cat([x[:1], x[1:] - 0.97 * x[:-1]])
    ours = track_mel(x, Preprocessing(preemphasis=0.97))[:, 2:-2]
    filtered = track_mel(y, Preprocessing())[:, 2:-2]
    gap = 10 * (ours.clamp_min(1e-10).log10() - filtered.clamp_min(1e-10).log10()).abs()
    # in the lowest bands (below ~170 Hz) the filter is -20 to -30 dB and the Hann window's leakage from louder
    # neighbours decides what the filtered signal shows; above them the two agree closely
    assert float(gap[8:].median()) < 0.02 and float(gap[8:].quantile(0.99)) < 0.5
    assert torch.equal(track_mel(x, Preprocessing(preemphasis=0.0)), track_mel(x, Preprocessing()))
    for bad in (1.0, -0.1, float("nan"), True):
        with pytest.raises(ParameterError, match="preemphasis"):
            Preprocessing(preemphasis=bad)

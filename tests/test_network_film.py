"""Films through a trained style network (``nst_keras.video --network``):
frame count, rate, size and audio kept, every frame the network's picture of
it, blends of a several-painting network, a bounded read-ahead, and the
optimisation's options refused."""

import os
import threading
import time

import numpy as np
import pytest

pytest.importorskip("cv2", reason="pip install 'nst_keras[video]'")
pytest.importorskip("imageio_ffmpeg", reason="pip install 'nst_keras[video]'")

from nst_keras import video  # noqa: E402
from nst_keras.video import network_film, videoio  # noqa: E402
from test_video import ffmpeg  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 10-frame 64x48 clip at 10 fps with a sine sound track, and two networks."""
    from nst_keras.engine import network

    d = tmp_path_factory.mktemp("netfilm")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=8000", "-frames:v", 10, "-t", 1.0,
           "-c:v", "libx264", "-pix_fmt", "yuv444p", "-c:a", "aac", d / "clip.mp4")
    network.build_network(0.125, seed=5).save(str(d / "one.keras"))
    three = network.build_network(0.125, seed=6, styles=3)
    for layer in three.layers:  # three different paintings' scales and shifts
        if hasattr(layer, "gamma") and len(layer.gamma.shape) == 2:
            rng = np.random.default_rng(len(layer.name))
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.5, layer.beta.shape).astype("float32"))
    three.save(str(d / "three.keras"))
    return d


def decoded(path):
    info = videoio.probe(str(path))
    return info, np.stack([f for _, f in videoio.read_frames(str(path), range(info.frames))])


def run(clip, out, *extra):
    return video.main(["nst_keras.video", f"--video={clip / 'clip.mp4'}", f"--output={out}",
                       *extra])


def test_the_film_keeps_count_rate_size_and_audio_and_is_the_networks(clip, tmp_path, capsys):
    from nst_keras import load_network

    out = tmp_path / "out.mkv"
    assert run(clip, out, f"--network={clip / 'one.keras'}", "--codec=ffv1") == 0
    said = capsys.readouterr().out
    assert "fps after the first batch" in said and "10 frames" in said
    source, frames = decoded(clip / "clip.mp4")
    made, pictures = decoded(out)
    assert (made.frames, made.fps, made.size, made.audio) == (10, 10.0, (64, 48), True)
    want = load_network(str(clip / "one.keras"))(frames)
    assert np.abs(pictures.astype(int) - want).max() <= 2  # ffv1: lossless
    assert sorted(os.listdir(tmp_path)) == ["out.mkv"]  # no frames folder, no temporary file


def test_part_of_the_film_smaller_and_blended(clip, tmp_path):
    from nst_keras import load_network

    net = load_network(str(clip / "three.keras"))
    films = {}
    for blend in ("1,0,0", "0,0,1"):
        out = tmp_path / f"{blend.replace(',', '')}.mkv"
        assert run(clip, out, f"--network={clip / 'three.keras'}", "--codec=ffv1",
                   "--frames=2:", "--fps=5", "--img_nrows=32",
                   f"--style_blend_weights={blend}") == 0
        made, films[blend] = decoded(out)
        assert (made.frames, made.fps, made.size) == (3, 5.0, (42, 32))  # positions 2..4 of 5 fps
    _, source = decoded(clip / "clip.mp4")
    from nst_keras.engine import imaging

    frame = imaging.load_image(source[4], (32, 42))  # position 2 at 5 fps: source frame 4
    assert np.abs(films["1,0,0"][0].astype(int) - net(frame, blend=[1, 0, 0])).max() <= 2
    assert np.abs(films["0,0,1"][0].astype(int) - net(frame, blend=[0, 0, 1])).max() <= 2
    assert np.abs(films["1,0,0"].astype(int) - films["0,0,1"]).mean() > 2


@pytest.mark.parametrize("extra,message", [
    (["--temporal_weight=10"], "--temporal_weight applies to films made by optimisation"),
    (["--workers=2"], "--workers applies to films made by optimisation"),
    (["--output_dir=frames"], "--output_dir applies to films made by optimisation"),
    (["--style_blend_weights=1,1"], "holds 1 painting(s)"),
    (["--img_nrows=8"], "at least 16"),
    (["--blend_previous=1"], "--blend_previous=1.0 must be 0 (each frame alone) to 0.95"),
])
def test_bad_network_film_input_is_one_line(clip, tmp_path, capsys, extra, message):
    out = tmp_path / "out.mp4"
    assert run(clip, out, f"--network={clip / 'one.keras'}", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not os.listdir(tmp_path)


def test_an_existing_film_is_kept_without_overwrite(clip, tmp_path, capsys):
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"someone else's film")
    assert run(clip, taken, f"--network={clip / 'one.keras'}") == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert taken.read_bytes() == b"someone else's film"
    assert run(clip, taken, f"--network={clip / 'one.keras'}", "--overwrite") == 0
    assert videoio.probe(str(taken)).frames == 10


def test_the_reader_runs_at_most_its_queue_ahead_and_passes_its_errors():
    made = []

    def produce(n, fail_at=None):
        for i in range(n):
            if i == fail_at:
                raise OSError("damaged frame")
            made.append(i)
            yield i

    reader = network_film._read_ahead(produce(100), 3)
    assert next(reader) == 0
    time.sleep(0.3)
    assert len(made) <= 1 + 3 + 1  # the one taken, the queue, the one waiting to go in
    assert list(reader) == list(range(1, 100))
    with pytest.raises(OSError, match="damaged frame"):
        list(network_film._read_ahead(produce(10, fail_at=4), 2))
    reader = network_film._read_ahead(produce(1000), 2)
    next(reader)
    reader.close()  # the consumer stops early: the thread ends
    for _ in range(100):  # within 2 s (it waits 0.1 s at a time for room in the queue)
        if not [t for t in threading.enumerate() if t.name == "film-reader"]:
            break
        time.sleep(0.02)
    assert not [t for t in threading.enumerate() if t.name == "film-reader"]


def _pan(frames=8, rows=48, cols=64, dx=2, dy=1):
    """A smooth random picture moved ``dx`` right and ``dy`` down a frame (uint8)."""
    import scipy.ndimage

    rng = np.random.default_rng(9)
    wide = scipy.ndimage.gaussian_filter(rng.uniform(0, 255, (rows + dy * frames,
                                                              cols + dx * frames, 3)), (2, 2, 0))
    wide = np.clip((wide - wide.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    return [wide[dy * (frames - t):dy * (frames - t) + rows,
                 dx * (frames - t):dx * (frames - t) + cols] for t in range(frames)]


def _flicker(frames, dx=2, dy=1):
    """Mean |S_t(p) - S_{t-1}(p - d)|: the pan moves the picture by d a frame."""
    return float(np.mean([np.abs(frames[t][dy:, dx:].astype(float) - frames[t - 1][:-dy, :-dx])
                          .mean() for t in range(1, len(frames))]))


def test_carrying_the_previous_frame_along_the_flow_lowers_the_flicker(clip):
    from nst_keras import load_network

    net = load_network(str(clip / "one.keras"))
    pan = _pan()
    alone = list(network_film.stylised_frames(net, pan))
    moving = list(network_film.with_motion(pan))
    assert moving[0][1] is None
    backward, weights = moving[3][1]
    inner = backward[8:-8, 8:-8]
    assert np.abs(inner[..., 0] + 2).mean() < 0.3 and np.abs(inner[..., 1] + 1).mean() < 0.3
    assert 0.5 < weights.mean() < 1.0  # what enters at the left and top edge is not carried
    carried = list(network_film.carried_frames(net, moving, 0.5))
    assert np.array_equal(carried[0], alone[0])  # nothing before the first frame
    assert len(carried) == len(pan) and np.abs(carried[5].astype(int) - alone[5]).max() > 2
    assert _flicker(alone) > 0.5 and _flicker(carried) < 0.7 * _flicker(alone)
    # Where the flow does not hold, a frame is the network's own picture.
    blind = [(frame, None if m is None else (m[0], np.zeros_like(m[1]))) for frame, m in moving]
    assert all(np.array_equal(a, b) for a, b in zip(network_film.carried_frames(net, blind, 0.5),
                                                     alone))


def test_a_film_with_the_previous_frame_carried(clip, tmp_path):
    plain, carried = tmp_path / "plain.mkv", tmp_path / "carried.mkv"
    assert run(clip, plain, f"--network={clip / 'one.keras'}", "--codec=ffv1") == 0
    assert run(clip, carried, f"--network={clip / 'one.keras'}", "--codec=ffv1",
               "--blend_previous=0.5", "--flow=farneback") == 0
    (made, a), (_, b) = decoded(plain), decoded(carried)
    assert (made.frames, made.size, made.audio) == (10, (64, 48), True)
    assert np.abs(a[0].astype(int) - b[0]).max() <= 2  # the first frame is its own
    assert np.abs(a[1:].astype(int) - b[1:]).mean() > 1.0
    assert sorted(os.listdir(tmp_path)) == ["carried.mkv", "plain.mkv"]

"""Films: frame count, rate, size and audio kept; flow warping and the occlusion
masks; the temporal loss; resuming frame by frame; chunks cut and blended without a
lost or doubled frame (on Ray workers: test_batch.py's cluster); bad input."""

import importlib.util
import json
import os
import subprocess

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="pip install 'nst_keras[video]'")
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="pip install 'nst_keras[video]'")

from conftest import make_picture  # noqa: E402
from nst_keras import video  # noqa: E402
from nst_keras.errors import UserError  # noqa: E402
from nst_keras.engine import flow
from nst_keras.video import film, temporal, videoio

# --nocheck_memory: these films are tiny, and other jobs on a shared machine must not
# make the engine's free-memory check refuse them.
FAST = ["--weights=random", "--seed=3", "--iterations=3", "--frame_iterations=2",
        "--log_every=0", "--save_every=0", "--content_layers=block2_conv2",
        "--style_layers=block1_conv1,block2_conv1", "--optimizer=adam", "--nocheck_memory"]


def ffmpeg(*args):
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                    "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return make_clips(tmp_path_factory.mktemp("clips"))


def make_clips(d):
    """A 6-frame 64x48 clip at 8 fps with a sine sound track, and a style picture."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=8", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=8000", "-frames:v", 6, "-t", 0.75,
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", d / "clip.mp4")
    from PIL import Image

    Image.fromarray(make_picture(40, 56, 1)).save(d / "style.png")
    return d


def run_video(clips, out, *extra):
    return video.main(["nst_keras.video", f"--video={clips / 'clip.mp4'}",
                       f"--style_image={clips / 'style.png'}", f"--output={out}", *FAST,
                       *extra])


def frame_bytes(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


# --------------------------------------------------------------------------
# Flow, masks and the temporal loss (no network)


def test_warping_by_a_translation_flow_gives_the_shifted_frame():
    picture = make_picture(40, 50, 2).astype(np.float32)
    shifted = np.roll(picture, shift=(2, 3), axis=(0, 1))  # content moves 3 right, 2 down
    back = np.zeros((40, 50, 2), np.float32)
    back[..., 0], back[..., 1] = -3.0, -2.0  # shifted(p) = picture(p - (3, 2))
    warped = flow.warp(picture, back)
    assert np.abs(warped[2:, 3:] - shifted[2:, 3:]).max() < 1e-3
    assert flow.outside(back)[:2].all() and flow.outside(back)[:, :3].all()
    assert not flow.outside(back)[2:, 3:].any()
    half = back * 0.5  # bilinear: half a pixel is the mean of the two neighbours
    half[..., 1] = 0
    mean = (picture[:, 8] + picture[:, 9]) / 2
    assert np.abs(flow.warp(picture, half)[:, 10] - mean).max() < 1e-3


def test_estimated_flow_follows_a_pan_and_the_masks_mark_occlusions():
    big = make_picture(60, 80, 3)
    previous, current = big[4:52, 4:68], big[4:52, 7:71]  # the camera pans 3 px right
    backward = flow.optical_flow(current, previous)
    forward = flow.optical_flow(previous, current)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(backward[inner][..., 0] - 3).mean() < 0.5
    fast = flow.optical_flow(current, previous, "dis_fast")
    assert np.abs(fast[inner][..., 0] - 3).mean() < 0.5 and not np.array_equal(fast, backward)
    weights = flow.consistency_weights(backward, forward)
    assert weights[:, -3:].max() == 0  # these pixels came into view: nothing to warp
    assert weights[inner].mean() > 0.9
    bad = forward.copy()
    bad[10:20, 10:20] += 5.0  # a region where forward and backward disagree
    # backward points 3 px right, so the current frame sees that region at x - 3
    assert flow.consistency_weights(backward, bad)[12:18, 8:16].max() == 0
    long = flow.long_term_weights([weights, np.ones_like(weights)])
    assert np.array_equal(long[0], weights) and np.array_equal(long[1], 1 - weights)


@pytest.mark.parametrize("normalization", ["keras_io", "gap"])
def test_temporal_loss_is_zero_at_the_warped_frame_positive_elsewhere_masked(normalization):
    target = np.random.default_rng(0).normal(0, 50, (1, 16, 20, 3)).astype(np.float32)
    mask = np.ones((16, 20), np.float32)
    mask[:, :5] = 0  # occluded
    term = temporal.TemporalTerm.build([target], [mask], normalization, target)
    assert float(term(target)) == 0.0
    moved = target.copy()
    moved[:, :, :5] += 40.0  # changes only occluded pixels
    assert float(term(moved)) == 0.0
    moved[:, :, 10] += 40.0
    value = float(term(moved))
    factor = temporal.normalization_factor(normalization, target)
    assert value == pytest.approx(factor * 16 * 3 * 40.0 ** 2, rel=1e-5)
    if normalization == "keras_io":  # the mean over the 3 P values
        assert factor == pytest.approx(1 / (3 * 16 * 20))
    smaller = term(moved[:, ::2, ::2])  # a coarser scale sees resized targets
    assert float(smaller) > 0


def test_the_objective_adds_an_extra_term_to_its_loss_and_gradient():
    import tensorflow as tf

    from conftest import objective_of

    rng = np.random.default_rng(1)
    target, image = (rng.normal(0, 30, (1, 8, 10, 3)).astype(np.float32) for _ in range(2))
    mask = (rng.uniform(size=(8, 10)) > 0.3).astype(np.float32)
    term = temporal.TemporalTerm.build([target], [mask], "keras_io", target)
    objective = objective_of(None, target, [], content_layers=[], style_layers=[],
                                content_weight=0, style_weight=0, total_variation_weight=0,
                                extra_terms=[(temporal.NAME, 2.0, term)])
    terms, grad = objective.value_and_grad(tf.constant(image))
    factor = 1 / (3 * 80)
    expected = factor * np.sum(mask[None, ..., None] * (image - target) ** 2)
    assert float(terms[temporal.NAME]) == pytest.approx(expected, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(2 * expected, rel=1e-5)
    want = 2 * 2 * factor * mask[None, ..., None] * (image - target)
    assert np.allclose(grad.numpy(), want, rtol=1e-4, atol=1e-6)


def test_a_frame_starts_from_the_warped_previous_result_and_content_where_new():
    big = make_picture(60, 90, 4)
    contents = {0: big[4:52, 4:68], 1: big[4:52, 7:71]}  # a 3 px pan to the right
    stylised = make_picture(48, 64, 5)
    options = film.VideoOptions(video="v.mp4", output="o.mp4")
    config = film.settings.Config(content_image="v.mp4", style_image="s.png")
    init, term = film.temporal_start(config, options, contents, {0: stylised}, 1)
    inner = init[8:-8, 8:-12].astype(float)
    assert np.abs(inner - stylised[8:-8, 11:-9]).mean() < 3  # moved with the pan
    assert np.array_equal(init[:, -3:], contents[1][:, -3:])  # came into view
    assert float(term(film.vgg.preprocess_image(init))) < float(
        term(film.vgg.preprocess_image(contents[1])))


# --------------------------------------------------------------------------
# Plans and blending (pure)


def test_frame_selection_by_range_and_rate():
    assert film.select_frames(10, 8.0, None, None) == (tuple(range(10)), 8.0, 0)
    assert film.select_frames(10, 8.0, 4.0, None) == ((0, 2, 4, 6, 8), 4.0, 0)
    assert film.select_frames(10, 8.0, None, "3:6") == ((3, 4, 5), 8.0, 3)
    assert film.select_frames(10, 8.0, None, "7:")[0] == (7, 8, 9)
    for bad in ("5", "a:b", "6:2", "20:30"):
        with pytest.raises(UserError, match="--frames"):
            film.select_frames(10, 8.0, None, bad)


@pytest.mark.parametrize("count,workers,overlap", [(8, 2, 2), (30, 3, 4), (100, 4, 5),
                                                   (5, 4, 2), (3, 2, 4), (12, 1, 4),
                                                   (6, 2, 2), (9, 3, 3)])
def test_chunks_cover_every_frame_once_after_blending(count, workers, overlap):
    chunks = film.plan_chunks(count, workers, overlap)
    assert chunks[0].start == 0 and chunks[-1].stop == count
    assert len(chunks) <= max(1, workers)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start == a.stop - overlap  # neighbours share exactly `overlap` frames
        assert a.stop - a.start > overlap
    for a, c in zip(chunks, chunks[2:]):
        assert c.start >= a.stop  # no frame in three chunks
    for position in range(count):
        weights = film.blend_weights(chunks, position)
        assert sum(w for _, w in weights) == pytest.approx(1.0)
        assert all(chunks[k].start <= position < chunks[k].stop and w > 0 for k, w in weights)
    if len(chunks) > 1:  # the later chunk fades in across the shared frames
        shared = range(chunks[1].start, chunks[0].stop)
        fades = [dict(film.blend_weights(chunks, p))[1] for p in shared]
        assert fades == sorted(fades) and 0 < fades[0] and fades[-1] < 1
    assert film.plan_chunks(count, 1, overlap) == (film.Chunk(0, 0, count),)


# --------------------------------------------------------------------------
# Whole films (random weights)


@pytest.fixture(scope="module")
def straight(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "out.mp4"
    assert run_video(clips, out) == 0
    return out


def test_frame_count_rate_size_and_audio_are_kept(clips, straight):
    source, made = videoio.probe(str(clips / "clip.mp4")), videoio.probe(str(straight))
    assert (made.frames, made.fps, made.size) == (6, 8.0, (64, 48))
    assert source.audio and made.audio
    frames = sorted(os.listdir(str(straight).replace(".mp4", "_frames/frames")))
    assert frames == [f"frame_{i:06d}.png" for i in range(6)]
    assert not [n for n in os.listdir(straight.parent) if n.startswith(".tmp")]
    record = json.load(open(str(straight).replace(".mp4", "_frames/video.json")))
    assert (record["frames"], record["audio"], record["key"]["film"]["fps"]) == (6, True, 8.0)


def test_part_of_a_film_at_another_rate_and_size(clips, tmp_path):
    out = tmp_path / "part.mkv"
    assert run_video(clips, out, "--frames=1:", "--fps=4", "--img_nrows=32",
                     "--temporal_weight=0") == 0
    made = videoio.probe(str(out))
    assert (made.frames, made.fps, made.size) == (2, 4.0, (42, 32))  # frames 2 and 4 of 8 fps
    assert made.audio


def test_an_interrupted_film_resumes_at_the_next_frame_to_the_same_frames(clips, straight,
                                                                          tmp_path):
    from nst_keras import cli

    out = tmp_path / "out.mp4"
    cli.parse(["nst_keras.video", f"--video={clips / 'clip.mp4'}", f"--output={out}",
               f"--style_image={clips / 'style.png'}", *FAST], video.FLAGS)
    config, options = video.config_from_flags(), video.options_from_flags()
    done = []

    def stop_after_three(position, path):
        done.append(position)
        if len(done) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        film.stylize_video(config, options, log=lambda s: None, on_frame=stop_after_three)
    assert not out.exists()
    lines = []
    film.stylize_video(config, options, log=lines.append,
                       on_frame=lambda position, path: done.append(position))
    assert done == [0, 1, 2, 3, 4, 5]  # the rerun made only the missing frames
    assert any("resuming: 3 stylised frames kept" in line for line in lines)
    ours = frame_bytes(tmp_path / "out_frames" / "frames")
    assert ours == frame_bytes(str(straight).replace(".mp4", "_frames/frames"))


def test_ctrl_c_exits_130_keeping_the_saved_frames_and_no_film(clips, tmp_path, capsys,
                                                              monkeypatch):
    made = []
    real = film.stylize_frame

    def interrupted_after_two(*args, **kwargs):
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(film, "stylize_frame", interrupted_after_two)
    out = tmp_path / "cut.mp4"
    assert run_video(clips, out, "--img_nrows=32") == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run the same command again" in err
    assert not out.exists()
    assert sorted(os.listdir(tmp_path / "cut_frames" / "frames")) == [
        "frame_000000.png", "frame_000001.png"]


# --------------------------------------------------------------------------
# Bad input


def test_style_masks_reach_every_frame(clips, tmp_path):
    from PIL import Image

    left = np.zeros((48, 64), np.uint8)
    left[:, :32] = 255
    Image.fromarray(left).save(tmp_path / "left.png")
    Image.fromarray(255 - left).save(tmp_path / "right.png")
    Image.fromarray(make_picture(40, 56, 5)).save(tmp_path / "other.png")
    styles = f"--style_image={clips / 'style.png'},{tmp_path / 'other.png'}"
    made = {}
    for name, extra in {"masked": [f"--style_masks={tmp_path / 'left.png'},"
                                   f"{tmp_path / 'right.png'}"], "blend": []}.items():
        out = tmp_path / f"{name}.mp4"
        assert video.main(["nst_keras.video", f"--video={clips / 'clip.mp4'}", styles,
                           f"--output={out}", *FAST, "--frames=0:2", "--temporal_weight=0",
                           *extra]) == 0
        made[name] = frame_bytes(tmp_path / f"{name}_frames" / "frames")
        record = json.load(open(tmp_path / f"{name}_frames" / "video.json"))
        assert bool(record["key"]["settings"]["style_masks"]) == (name == "masked")
    assert len(made["masked"]) == 2
    assert all(made["masked"][n] != made["blend"][n] for n in made["masked"])


def test_bad_input_is_one_line_exit_2_and_writes_nothing(clips, tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a film")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000", "-t", 0.5,
           "-c:a", "aac", tmp_path / "sound.m4a")
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=8", "-frames:v", 0,
           "-c:v", "libx264", tmp_path / "empty.mp4")
    out = tmp_path / "out.mp4"
    taken = tmp_path / "taken.mp4"
    taken.write_bytes(b"someone else's film")
    cases = [
        ([f"--output={taken}"], "already exists"),
        ([f"--video={text}"], "is not a video"),
        ([f"--video={tmp_path / 'sound.m4a'}"], "holds no video frames"),
        ([f"--video={tmp_path / 'empty.mp4'}"], "holds no video frames"),
        ([f"--video={tmp_path / 'missing.mp4'}"], "does not exist"),
        ([f"--output={tmp_path / 'no_folder' / 'out.mp4'}"], "cannot write --output"),
        ([f"--output={text / 'out.mp4'}"], "cannot write --output"),
        (["--codec=no_such_codec"], "no such encoder"),
        ([f"--output={tmp_path / 'out.xyz'}"], "unknown film format"),
        (["--frames=9:3"], "--frames"),
        ([f"--style_image={tmp_path / 'missing.png'}"], "does not exist"),
        (["--style_layers=block9_conv1"], "block9_conv1"),
        (["--video="], "no --video given"),
        (["--chunk_overlap=-1"], "--chunk_overlap=-1 must be 0 or more"),
        (["--temporal_frames=0"], "needs frame distances of 1 or more"),
        (["--flow=lucas"], "--flow='lucas' is not known"),
        (["--crf=60"], "--crf=60 must be 0 (lossless) to 51 (worst)"),
    ]
    if importlib.util.find_spec("ray") is not None:  # nobody listens on port 1
        cases.append((["--ray_address=127.0.0.1:1"], "cannot reach the Ray cluster"))
    for extra, message in cases:
        args = [f"--video={clips / 'clip.mp4'}", f"--output={out}", *extra]
        status = video.main(["nst_keras.video", f"--style_image={clips / 'style.png'}",
                             *FAST, *args])
        err = capsys.readouterr().err.strip()
        assert status == 2 and err.count("\n") == 0 and message in err, (extra, err)
    assert not out.exists() and not (tmp_path / "out_frames").exists()
    assert not (tmp_path / "no_folder").exists()
    assert taken.read_bytes() == b"someone else's film"


def test_crf_sets_the_quality_of_the_written_film(tmp_path):
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (48, 64, 3), np.uint8) for _ in range(4)]
    sizes = {}
    for crf in (0, 45):
        path = tmp_path / f"crf{crf}.mp4"
        assert videoio.encode(str(path), iter(frames), 8.0, (48, 64), crf=crf) == 4
        sizes[crf] = path.stat().st_size
    assert sizes[0] > 3 * sizes[45]  # lossless noise is much bigger than crf 45
    assert video.FLAGS["crf"].default == 18


def test_the_frames_key_changes_when_a_mask_file_changes_in_place(tmp_path):
    from nst_keras.settings import Config
    from PIL import Image
    style, mask = str(tmp_path / "style.png"), str(tmp_path / "mask.png")
    Image.fromarray(make_picture(16, 16, 1)).save(style)
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
    config = Config(content_image=style, style_image=style, style_masks=(mask,))
    before = film._file_digests(config)
    assert sorted(before) == sorted({os.path.abspath(style), os.path.abspath(mask)})
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mask)  # same name, new painting
    after = film._file_digests(config)
    assert after[os.path.abspath(mask)] != before[os.path.abspath(mask)]
    assert after[os.path.abspath(style)] == before[os.path.abspath(style)]

"""tiling: the tiled objective is the untiled one (loss, gradient, SGD path),
the halo is what makes it exact, tiles spread over devices and workers, tiled
runs resume bit for bit, and bad tiling settings fail in one line."""

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from nst_keras import Config
from nst_keras.engine import memory, tiling, vgg
from nst_keras.errors import Interrupted, UserError
from nst_keras.output import checkpoint
from nst_keras.output.stylize import stylize
from conftest import REPO, config_for, flags_for, make_picture, run_cli, objective_of

ROWS, COLS, TILE = 128, 192, 64
# Layers up to block3: the exact halo is 32 pixels, so the 64-pixel tiles'
# crops (at most 128 x 128, 96 rows at the top and bottom tiles) are really
# parts of the 128 x 192 image: 2 x 3 tiles, inner edges in both directions.
CONTENT, STYLE = ["block2_conv2"], ["block1_conv1", "block2_conv1", "block3_conv1"]
WEIGHTS = {"keras_io": (2.5e-8, 1e-6, 1e-6), "scaled": (1.0, 10.0, 0.1),
           "gap": (1.0, 10.0, 0.1), "gap_total": (1.0, 160.0, 1.0)}


def make_images():
    """Content and style network images, and the image the objectives are taken at."""
    content = vgg.preprocess_image(make_picture(ROWS, COLS, 0))
    style = vgg.preprocess_image(make_picture(ROWS, COLS, 1))
    noise = np.random.default_rng(0).normal(0, 20, content.shape).astype(np.float32)
    return content, style, content + noise


@pytest.fixture(scope="module")
def images():
    return make_images()


_BUILT = {}


def objectives(backbone, images, normalization, pooling="max", halo=None, strategy=None):
    """``(untiled, tiled)`` objectives of the same settings (kept for the other tests)."""
    key = (normalization, pooling, halo)
    if strategy is None and key in _BUILT:
        return _BUILT[key]
    content, style, _ = images
    with strategy.scope() if strategy else contextlib.nullcontext():
        extractor = vgg.build_extractor(backbone, CONTENT + STYLE, pooling=pooling)
    cw, sw, tw = WEIGHTS[normalization]
    kw = dict(content_layers=CONTENT, style_layers=STYLE, content_weight=cw, style_weight=sw,
              total_variation_weight=tw, normalization=normalization)
    halo = tiling.default_halo("vgg19", CONTENT + STYLE) if halo is None else halo
    built = (objective_of(extractor, content, [style], **kw),
             objective_of(extractor, content, [style], tile_size=TILE,
                                          halo=halo, strategy=strategy, **kw))
    if strategy is None:
        _BUILT[key] = built
    return built


def errors(untiled, tiled, image, eager=True, reference=None):
    """``({term: relative error}, relative L2 error of the gradient)``.  The
    untiled reference (or ``reference``, its ``(terms, gradient)`` computed
    before) is evaluated eagerly (no trace) unless ``eager`` is false: eager
    float16 convolutions take TensorFlow's slow CPU kernels (about 70 s against
    0.1 s traced on a 2-core CPU)."""
    fn = untiled.value_and_grad_fn if eager else untiled.value_and_grad
    ref_terms, ref_grad = reference or fn(tf.constant(image))
    terms, grad = tiled.value_and_grad(image)
    rel = {k: abs(float(terms[k]) - float(ref_terms[k])) / max(abs(float(ref_terms[k])), 1e-30)
           for k in ref_terms}
    ref_grad, grad = ref_grad.numpy(), grad.numpy()
    return rel, float(np.linalg.norm(grad - ref_grad) / np.linalg.norm(ref_grad))


def test_halo_comes_from_the_receptive_field():
    # block5_conv2: 3x3 convolutions at strides 1,1,2,2,4x4,8x4,16x2 reach 86
    # pixels; twice that plus 15 rounds up to 192.  Up to block3_conv1: 2*10+3 -> 32.
    assert tiling.reach_and_stride("vgg19", ["block5_conv2", "block1_conv1"]) == (86, 16)
    assert tiling.default_halo("vgg19", ["block5_conv2"]) == 192
    assert tiling.default_halo("vgg19", CONTENT + STYLE) == 32
    assert tiling.default_halo("vgg16", ["block5_conv2"]) == 176  # reach 74: 2*74+15=163


def test_tiles_partition_the_image_and_crops_stay_inside():
    tiles = tiling.tile_grid(ROWS, COLS, TILE, 32)
    covered = np.zeros((ROWS, COLS), int)
    for t in tiles:
        covered[t.top:t.bottom, t.left:t.right] += 1
        assert 0 <= t.crop_top <= t.top and t.bottom <= t.crop_bottom <= ROWS
        assert t.crop_top % 16 == 0 and t.crop_left % 16 == 0
    assert (covered == 1).all() and len(tiles) == 2 * 3
    inner = [t for t in tiles if t.crop_left > 0 and t.crop_right < COLS]
    assert len(inner) == 2 and all(t.crop_right - t.crop_left == TILE + 64 for t in inner)
    assert all(t.crop_bottom - t.crop_top < ROWS for t in tiles)


# Each normalisation once and each pooling at least once (the halo test below
# takes scaled with max pooling).
@pytest.mark.parametrize("normalization,pooling", [
    ("keras_io", "max"), ("scaled", "avg"), ("gap_total", "avg")])
def test_tiled_loss_and_gradient_equal_the_untiled(backbone, images, normalization, pooling):
    untiled, tiled = objectives(backbone, images, normalization, pooling)
    assert len(tiled.tiles(images[2])) == 6
    rel, grad = errors(untiled, tiled, images[2])
    assert max(rel.values()) < 1e-5, rel
    assert grad < 1e-4
    if pooling == "avg":  # terms() is the value half of value_and_grad
        assert float(tiled.terms(images[2])["loss"]) == pytest.approx(
            float(untiled.terms(images[2])["loss"]), rel=1e-5)


def float32_gradient(backbone, images, _kept={}):
    """The float32 gradient the half-precision checks compare with (computed once)."""
    if "grad" not in _kept:
        content, style, x = images
        cw, sw, tw = WEIGHTS["gap_total"]
        extractor = vgg.build_extractor(backbone, CONTENT + STYLE, pooling="avg")
        untiled = objective_of(extractor, content, [style], content_layers=CONTENT,
                               style_layers=STYLE, content_weight=cw, style_weight=sw,
                               total_variation_weight=tw, normalization="gap_total")
        _kept["grad"] = untiled.value_and_grad_fn(tf.constant(x))[1].numpy()
    return _kept["grad"]


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_tiling_adds_little_to_the_error_of_half_precision(backbone, images, precision):
    # Measured here: bfloat16 itself moves the gradient by 2.7e-2 from float32
    # and tiling under it adds 2.2e-3 (float16: 7.2e-3 and 7.3e-4).
    content, style, x = images
    cw, sw, tw = WEIGHTS["gap_total"]
    kw = dict(content_layers=CONTENT, style_layers=STYLE, content_weight=cw, style_weight=sw,
              total_variation_weight=tw, normalization="gap_total")
    grads = {"float32": float32_gradient(backbone, images)}
    extractor = vgg.build_extractor(backbone, CONTENT + STYLE, precision=precision,
                                    pooling="avg")
    untiled = objective_of(extractor, content, [style], **kw)
    grads[precision] = untiled.value_and_grad(x)[1].numpy()
    tiled = objective_of(extractor, content, [style], tile_size=TILE,
                                         halo=32, **kw)
    rel, tiling_error = errors(untiled, tiled, x, eager=False)  # traced above
    precision_error = float(np.linalg.norm(grads[precision] - grads["float32"])
                            / np.linalg.norm(grads["float32"]))
    assert precision_error > 1e-3  # the half-precision path really ran
    assert tiling_error < 0.25 * precision_error, (tiling_error, precision_error)
    assert max(rel.values()) < 1e-4, rel


def test_a_smaller_halo_gives_errors_that_grow(backbone, images):
    # The loss needs only 16 pixels (reach 10 + stride 3), the gradient 32.
    untiled, default = objectives(backbone, images, "scaled")  # the default halo, 32
    reference = untiled.value_and_grad_fn(tf.constant(images[2]))  # once, for every halo
    content, style, _ = images
    cw, sw, tw = WEIGHTS["scaled"]
    grads = {}
    for halo in (None, 16, 0):
        tiled = default if halo is None else objective_of(
            untiled.extractor, content, [style], content_layers=CONTENT, style_layers=STYLE,
            content_weight=cw, style_weight=sw, total_variation_weight=tw,
            normalization="scaled", tile_size=TILE, halo=halo)
        rel, grads[halo] = errors(untiled, tiled, images[2], reference=reference)
        if halo == 0:
            assert rel["style_loss"] > 1e-3 and rel["content_loss"] > 1e-3
    assert grads[None] < 1e-5 < 1e-4 < grads[16] < grads[0]
    assert grads[0] > 0.05


@functools.lru_cache(maxsize=4)
def sgd_run(tile_size, iterations=3, rows=ROWS, cols=COLS, log=None, **extra):
    config = Config(weights="random", seed=3, img_nrows=rows, iterations=iterations, log_every=1,
                    save_every=0, content_layers=CONTENT, style_layers=STYLE,
                    tile_size=tile_size, **extra)
    return stylize(config, content=make_picture(rows, cols, 0),
                   style=make_picture(rows * 11 // 16, cols * 11 // 16, 1),
                   log=log or (lambda line: None))


def test_three_sgd_steps_tiled_end_on_the_untiled_image():
    untiled, tiled = sgd_run(0), sgd_run(TILE)
    assert np.abs(tiled.tensor - untiled.tensor).max() < 1e-3
    for a, b in zip(untiled.history, tiled.history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    # The run moved: the comparison is not of two unchanged images.
    assert np.abs(untiled.tensor - vgg.preprocess_image(make_picture(ROWS, COLS, 0))).max() > 1


def test_lbfgs_on_the_tiled_objective_takes_the_untiled_path(backbone, images):
    import tensorflow as tf

    from nst_keras.engine import optim

    # Average pooling: with max pooling L-BFGS's line search is so sensitive
    # (a pooling window's winner flips) that the untiled run itself ends 2.8
    # pixel units apart when its start moves by 1e-4.
    ends = []
    for loss in objectives(backbone, images, "scaled", "avg"):
        image = tf.Variable(images[2])
        optim.LBFGS(loss, image).run(1, 2, lambda step, terms: True)
        ends.append(image.numpy())
    assert 1 < np.abs(ends[0] - images[2]).max()
    assert np.abs(ends[1] - ends[0]).max() < 1e-3


# -- devices and workers ---------------------------------------------------------

def python_env():
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return env


def last_json(text):
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def test_two_cpu_devices_give_the_one_device_loss_and_gradient(backbone, images):
    # On the two logical CPU devices the suite sets up (tests/conftest.py).  The
    # gap normalisation here: its targets are tiled over the devices too.
    strategy = tiling.make_strategy("CPU:0,CPU:1")
    # One strategy per set of devices in a process: a second one's collective
    # operations would meet the first's (a training after this run aborted).
    assert tiling.make_strategy("cpu:0, cpu:1") is strategy
    untiled, tiled = objectives(backbone, images, "gap", strategy=strategy)
    rel, grad = errors(untiled, tiled, images[2])
    assert tiled.spread.replicas == 2
    assert max(rel.values()) < 1e-5 and grad < 1e-4


WORKER = r"""
import json, sys
sys.path[:0] = [REPO, REPO + "/tests"]
import test_tiling as t
lines = []
result = t.sgd_run(t.TILE, distribute=DISTRIBUTE, iterations=1, log=lines.append, **t.TWO_TILES)
print(json.dumps({"loss": result.history[0]["loss"],
                  "tiled": [line for line in lines if line.startswith("tiled: ")]}))
"""
TWO_TILES = dict(rows=64, cols=128)  # one 64-pixel tile per worker


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_two_workers_give_the_first_step_loss_of_one_process():
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    code = f"REPO = {REPO!r}\nDISTRIBUTE = 'multi_worker'\n" + WORKER
    procs = []
    try:
        for index in range(2):
            env = python_env()
            env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                           "task": {"type": "worker", "index": index}})
            procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    losses = [last_json(out)["loss"] for out, _ in outs]
    for out, _ in outs:  # one tile on each worker
        assert last_json(out)["tiled"] == ["tiled: 2 tiles of 64 pixels, halo 32, on 2 replica(s)"]
    single = sgd_run(0, iterations=1, **TWO_TILES).history[0]["loss"]  # before the first step
    assert losses[0] == losses[1]
    assert losses[0] == pytest.approx(single, rel=1e-5)


# -- resume, multi-scale, memory and bad input -------------------------------------

def test_a_tiled_multi_scale_run_resumes_bit_for_bit(tmp_path, content_path, style_path,
                                                     capsys):
    # Scale 48 fits in one 64-pixel tile (untiled); scale 96 (96 x 128) is tiled.  Adam:
    # its moments are checkpointed beside the image (SGD's resume: test_rundir.py).
    common = ["--optimizer=adam", "--scales=48,96", "--iterations=3",
              "--tile_size=64", "--content_layers=block3_conv1",
              "--style_layers=block1_conv1,block2_conv1"]
    straight = tmp_path / "straight"
    assert run_cli(*flags_for(content_path, style_path, straight, *common)) == 0
    logged = capsys.readouterr().out
    assert logged.count("tiled: ") == 1 and "tiled: 4 tiles of 64 pixels, halo 32" in logged
    resumed = tmp_path / "resumed"

    def log(line):
        if line.startswith("Iteration 5:"):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        stylize(config_for(*flags_for(content_path, style_path, resumed, *common)), log=log)
    assert checkpoint.load(str(resumed)).step == 5
    assert run_cli(*flags_for(content_path, style_path, resumed, *common),
                   f"--resume={resumed}") == 0
    np.testing.assert_array_equal(checkpoint.load(str(resumed)).image,
                                  checkpoint.load(str(straight)).image)


def test_memory_check_knows_tiles(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: (16 * 2**30, "available memory"))
    config = Config(content_image="c", style_image="s", optimizer="adam",
                    precision="mixed_bfloat16")
    with pytest.raises(UserError, match=r"lower --img_nrows .* or set --tile_size=1024"):
        memory.check(8192, 8192, config)
    memory.check(8192, 8192, config.replace(tile_size=1024))  # fits in 16 GiB tiled
    assert memory.tile_size_for(8192, 8192, config.replace(tile_size="auto")) == 1024
    assert memory.tile_size_for(512, 512, config.replace(tile_size="auto")) == 0
    assert memory.tile_size_for(512, 512, config.replace(tile_size=1024)) == 0  # one tile
    with pytest.raises(UserError, match="tiles needs about .* lower --img_nrows or "
                                        "--tile_size"):
        memory.check(30000, 30000, config.replace(tile_size=1024))
    # L-BFGS keeps float64 vectors: the same size no longer fits.
    with pytest.raises(UserError):
        memory.check(8192, 8192, config.replace(tile_size=1024, optimizer="lbfgs"))


@pytest.mark.parametrize("flag,message", [
    ("--tile_size=48", "--tile_size=48 must be 0 (off), auto, or a multiple of 16"),
    ("--tile_size=100", "--tile_size=100 must be 0 (off), auto, or a multiple of 16"),
    ("--tile_size=big", "--tile_size=big must be 0 (off), auto or a tile side"),
    ("--tile_halo=20", "--tile_halo=20 must be a multiple of 16"),
    ("--devices=all", "set --tile_size too"),
    ("--devices=TPU:0", "'TPU:0' is not a device"),
    ("--devices=GPU:7", "there is no device GPU:7 here"),
    ("--style_layers=block5_pool", "--tile_size=80 must be a multiple of 32, the stride of "
                                   "layer block5_pool"),
])
def test_bad_tiling_settings_fail_in_one_line(tmp_path, content_path, style_path, capsys,
                                              flag, message):
    out = tmp_path / "out"
    extra = ["--tile_size=64"] if flag.startswith("--devices=") and flag != "--devices=all" \
        else ["--tile_size=80"] if flag.startswith("--style_layers") else []
    assert run_cli(*flags_for(content_path, style_path, out, flag, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()

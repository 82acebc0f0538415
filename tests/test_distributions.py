"""Distribution style losses, the colour term and style masks: the W2 value against a
direct NumPy computation, its gradient against finite differences, tiled = untiled
for every tileable term, resume bit for bit with each loss, a masked two-style run
whose halves take their own style's palette, and bad masks in one line."""

import os

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
from PIL import Image

from conftest import make_picture, objective_of
from nst_keras import Config
from nst_keras.engine import distributions, terms, vgg
from nst_keras.errors import UserError
from nst_keras.output import checkpoint
from nst_keras.output.stylize import stylize
from nst_keras.run import main as run_main

ROWS, COLS, TILE = 96, 128, 64
CONTENT, STYLE = ["block2_conv2"], ["block1_conv1", "block2_conv1"]
KW = dict(content_layers=CONTENT, style_layers=STYLE, content_weight=1.0, style_weight=10.0,
          total_variation_weight=0.1, normalization="scaled")


def w2_numpy(x, y):
    """W2^2 between the Gaussians fitted to the rows of ``x`` and of ``y`` (float64)."""
    mx, my = x.mean(0), y.mean(0)
    cx = x.T @ x / len(x) - np.outer(mx, mx)
    cy = y.T @ y / len(y) - np.outer(my, my)
    root = scipy.linalg.sqrtm(cy).real
    cross = scipy.linalg.sqrtm(root @ cx @ root).real
    return float(np.sum((mx - my) ** 2) + np.trace(cx) + np.trace(cy) - 2 * np.trace(cross))


def sums_of(x):
    return distributions.moments(tf.constant(x[None, :, None, :], tf.float32))


def test_w2_equals_a_direct_numpy_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (400, 6)) @ rng.normal(0, 1, (6, 6)) + 2.0
    y = rng.normal(0, 1, (300, 6)) @ rng.normal(0, 1, (6, 6)) - 1.0
    target = distributions.blended_gaussian([sums_of(y)], [1.0])
    got = float(distributions.w2_squared(sums_of(x), target))
    assert got == pytest.approx(w2_numpy(x, y), rel=1e-3)
    assert float(distributions.w2_squared(sums_of(y), target)) == pytest.approx(0.0, abs=1e-3)


def test_w2_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, (200, 4)) @ rng.normal(0, 1, (4, 4))
    target = distributions.blended_gaussian([sums_of(y)], [1.0])
    x = tf.Variable(rng.normal(0, 1, (1, 50, 1, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        value = distributions.w2_squared(distributions.moments(x), target)
    grad = tape.gradient(value, x).numpy()
    direction = rng.normal(0, 1, x.shape).astype(np.float32)
    eps = 1e-2
    plus = distributions.w2_squared(distributions.moments(x + eps * direction), target)
    minus = distributions.w2_squared(distributions.moments(x - eps * direction), target)
    numeric = (float(plus) - float(minus)) / (2 * eps)
    assert float(np.sum(grad * direction)) == pytest.approx(numeric, rel=2e-2)


@pytest.fixture(scope="module")
def extractor(backbone):
    return vgg.build_extractor(backbone, CONTENT + STYLE)


def image(seed):
    return vgg.preprocess_image(make_picture(ROWS, COLS, seed))


def halves():
    left = np.zeros((1, ROWS, COLS, 1), np.float32)
    left[:, :, :COLS // 2] = 1.0
    return [left, 1.0 - left]


@pytest.mark.parametrize("extra", [
    dict(style_loss="wasserstein"),
    dict(style_loss="wasserstein", style_masks=halves(), normalization="gap_total"),
    dict(style_masks=halves()),
    dict(color_weight=3.0),
    dict(color_weight=3.0, style_masks=halves(), normalization="keras_io",
         content_weight=2.5e-8, style_weight=1e-6, total_variation_weight=1e-6),
])
def test_tiled_equals_untiled_for_every_tileable_term(extractor, extra):
    kw = {**KW, **extra}
    styles = [image(1), image(2)] if "style_masks" in kw else [image(1)]
    untiled = objective_of(extractor, image(0), styles, **kw)
    tiled = objective_of(extractor, image(0), styles, tile_size=TILE, halo=32,
                                         **kw)
    x = tf.constant(image(0) + np.random.default_rng(3).normal(0, 10, image(0).shape)
                    .astype(np.float32))
    ref_terms, ref_grad = untiled.value_and_grad_fn(x)  # the reference, eagerly: no trace
    terms, grad = tiled.value_and_grad(x)
    for name in ref_terms:
        assert float(terms[name]) == pytest.approx(float(ref_terms[name]), rel=1e-4), name
    assert float(ref_terms["style_loss"]) > 0
    err = np.linalg.norm(grad.numpy() - ref_grad.numpy()) / np.linalg.norm(ref_grad.numpy())
    assert err < 1e-3


def test_sliced_wasserstein_draws_from_the_step_and_refuses_tiling(extractor):
    built = objective_of(extractor, image(0), [image(1)], **KW,
                                      style_loss="sliced_wasserstein")
    x = tf.constant(image(0))
    built.at_step(3)
    a = float(built.terms(x)["style_loss"])
    built.at_step(4)
    b = float(built.terms(x)["style_loss"])
    built.at_step(3)
    assert float(built.terms(x)["style_loss"]) == a and a != b and a > 0
    assert built.hold_draws(10)  # as under L-BFGS: one draw for steps 10..19
    built.at_step(13)
    held = float(built.terms(x)["style_loss"])
    built.at_step(19)
    assert float(built.terms(x)["style_loss"]) == held
    built.at_step(20)
    assert float(built.terms(x)["style_loss"]) != held
    at_style = objective_of(extractor, image(1), [image(1)], **KW,
                                         style_loss="sliced_wasserstein")
    assert float(at_style.terms(tf.constant(image(1)))["style_loss"]) < 1e-6 * pixels_ratio()
    with pytest.raises(UserError, match="sliced_wasserstein cannot be tiled"):
        objective_of(extractor, image(0), [image(1)], tile_size=TILE, halo=32,
                                     **KW, style_loss="sliced_wasserstein")


def test_lbfgs_runs_every_iteration_of_a_sliced_run_and_lowers_its_loss():
    config = Config(weights="random", seed=3, img_nrows=48, iterations=25, optimizer="lbfgs",
                    precision="float32", content_layers=CONTENT, style_layers=STYLE,
                    loss_normalization="gap_total", content_weight=1.0, style_weight=100.0,
                    total_variation_weight=0.1, style_loss="sliced_wasserstein", log_every=1,
                    save_every=0)
    result = stylize(config, content=make_picture(48, 64, 0), style=[make_picture(40, 56, 1)],
                     log=lambda s: None)
    # A new draw every 10 steps would end one L-BFGS-B run early (its line search
    # sees another function); restarted at each draw, it makes all 25.
    assert [h["iteration"] for h in result.history] == list(range(1, 26))
    style = [h["style_loss"] for h in result.history]
    assert style[-1] < 0.5 * style[0]


def test_sliced_colour_term_is_nil_at_the_paintings_colours_and_not_tiled(extractor):
    photo, painting = image(0), image(1)
    term = distributions.SlicedColorTerm.from_config(
        Config(content_image="c", style_image="s", loss_normalization="scaled",
               color_weight=1.0, color_loss="sliced"), terms.Pictures(photo, [painting]), None)
    at = {name: float(term.finish(term.sums({}, tf.constant(x), term.inputs(None),
                                            terms.WHOLE)))
          for name, x in {"photo": photo, "painting": painting,
                          "shuffled": np.random.default_rng(0).permutation(
                              painting.reshape(-1, 3)).reshape(painting.shape)}.items()}
    assert at["photo"] == pytest.approx(ROWS * COLS, rel=1e-4)  # in units of the photo's
    assert at["painting"] < 1e-3 * at["photo"]
    assert at["shuffled"] < 1e-3 * at["photo"]  # colours only, not where they are
    with pytest.raises(UserError, match="--color_loss=sliced cannot be tiled"):
        objective_of(extractor, photo, [painting], tile_size=TILE, halo=32,
                                     **KW, color_weight=1.0, color_loss="sliced")


def sorted_distance(mine, style) -> tf.Tensor:
    """The sorted form, ``mean((sort(p) - Q_s((i + 1/2) / n))^2)`` per ``(K, n)`` rows
    against ``(K, n_s)`` (the reference
    ``distributions.SlicedStyleTerm`` approximates)."""
    n, n_s = tf.shape(mine)[1], tf.shape(style)[1]
    where = tf.clip_by_value((tf.cast(tf.range(n), tf.float32) + 0.5) / tf.cast(n, tf.float32)
                             * tf.cast(n_s, tf.float32) - 0.5, 0.0, tf.cast(n_s - 1, tf.float32))
    low = tf.cast(tf.floor(where), tf.int32)
    high = tf.minimum(low + 1, n_s - 1)
    s = tf.sort(style, axis=1)
    frac = where - tf.cast(low, tf.float32)
    target = tf.gather(s, low, axis=1) * (1 - frac) + tf.gather(s, high, axis=1) * frac
    return tf.reduce_mean(tf.square(tf.sort(mine, axis=1) - target))


@pytest.mark.parametrize("n, n_style", [(50000, 31000), (300, 200), (1000, 5000)])
def test_sliced_histogram_matches_the_sorted_form_in_value_and_gradient(n, n_style):
    rng = np.random.default_rng(5)
    # Rectified, skewed projections of different sizes, as at a ReLU layer (a
    # third of them tied at zero).
    mine = tf.Variable(np.maximum(rng.normal(0.3, 1.0, (8, n)) *
                                  rng.uniform(0.5, 3, (8, 1)), 0).astype(np.float32))
    style = tf.constant(np.maximum(rng.normal(0.8, 2.0, (8, n_style)), 0).astype(np.float32)
                        ** 1.5)
    seed = tf.constant([1, 2], tf.int64)
    with tf.GradientTape(persistent=True) as tape:
        fast = distributions.matched_distance(mine, style, seed)
        exact = sorted_distance(mine, style)
    assert abs(float(fast) / float(exact) - 1) < 0.03
    g_fast, g_exact = (tape.gradient(v, mine).numpy().ravel() for v in (fast, exact))
    cosine = g_fast @ g_exact / np.linalg.norm(g_fast) / np.linalg.norm(g_exact)
    assert cosine > 0.999
    # Against itself the distance is (nearly) nil, against the style it is not.
    assert float(distributions.matched_distance(mine, mine, seed)) < 1e-2 * float(exact)


def pixels_ratio():
    return ROWS * COLS


def save(path, picture):
    Image.fromarray(picture).save(path)
    return str(path)


@pytest.fixture
def files(tmp_path):
    out = {"content": save(tmp_path / "c.png", make_picture(48, 64, 0)),
           "s1": save(tmp_path / "s1.png", make_picture(48, 64, 1)),
           "s2": save(tmp_path / "s2.png", make_picture(48, 64, 2))}
    left = np.zeros((48, 64), np.uint8)
    left[:, :32] = 255
    out["m1"], out["m2"] = (save(tmp_path / "m1.png", left), save(tmp_path / "m2.png", 255 - left))
    return out


def tiny_config(files, out, **changes):
    settings = dict(content_image=files["content"], style_image=files["s1"], weights="random",
                    seed=3, img_nrows=48, iterations=4, optimizer="sgd", precision="float32",
                    content_layers=CONTENT, style_layers=STYLE, loss_normalization="scaled",
                    content_weight=1.0, style_weight=10.0, total_variation_weight=0.1,
                    log_every=1, save_every=0, output_dir=str(out))
    return Config(**{**settings, **changes})


class StopAt:
    def __init__(self, step):
        self.step = step

    def on_start(self, run):
        pass

    def on_step(self, progress):
        if progress.step == self.step:
            progress.stop("test")

    def on_end(self, run, outcome):
        pass


# Each style loss and colour loss once, both optimisers (SGD's schedule and Adam's
# moments are restored for any loss: test_rundir.py).
@pytest.mark.parametrize("loss,optimizer,color_loss", [
    ("wasserstein", "sgd", "gaussian"), ("sliced_wasserstein", "adam", "sliced"),
    ("gram", "adam", "sliced")])
def test_resume_is_bit_for_bit_with_each_loss(files, tmp_path, loss, optimizer, color_loss):
    extra = dict(style_loss=loss, optimizer=optimizer, color_weight=1.0, color_loss=color_loss)
    straight = tiny_config(files, tmp_path / "straight", **extra)
    stylize(straight, log=lambda s: None)
    stopped = tiny_config(files, tmp_path / "stopped", **extra)
    assert stylize(stopped, callbacks=[StopAt(2)], log=lambda s: None).status == "stopped"
    stylize(stopped.replace(resume=str(tmp_path / "stopped")), log=lambda s: None)
    np.testing.assert_array_equal(checkpoint.load(str(tmp_path / "stopped")).image,
                                  checkpoint.load(str(tmp_path / "straight")).image)


@pytest.mark.parametrize("loss, color_weight, scales, color_loss", [
    ("gram", 10.0, None, "gaussian"), ("gram", 10.0, None, "sliced"),
    ("wasserstein", 0.0, None, "gaussian"), ("sliced_wasserstein", 0.0, None, "gaussian"),
    ("wasserstein", 0.0, [32, 40], "gaussian")])  # coarse to fine: masks resized per scale
def test_a_masked_two_style_run_gives_each_half_its_own_palette(tmp_path, loss, color_weight,
                                                                scales, color_loss):
    rows, cols = 32, 48
    photo = make_picture(rows, cols, 0)
    red = np.zeros((rows, cols, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((rows, cols, 3), np.uint8)
    blue[..., 2] = 220
    left = np.zeros((rows, cols), np.float32)
    left[:, :cols // 2] = 1.0
    # Sliced: its random directions pull more slowly; a larger step (measured at 40
    # steps: 119 and 77 against the default rate's 62 and 39).
    rate = dict(learning_rate=20.0) if loss == "sliced_wasserstein" else {}
    config = Config(weights="random", seed=3, img_nrows=rows, iterations=40, optimizer="adam",
                    **rate,
                    precision="float32", content_layers=CONTENT, style_layers=STYLE,
                    loss_normalization="scaled", content_weight=0.1, style_weight=10.0,
                    total_variation_weight=0.1, color_weight=color_weight,
                    style_masks=[left, 1 - left], style_loss=loss, log_every=0, save_every=0,
                    scales=scales, color_loss=color_loss)
    result = stylize(config, content=photo, style=[red, blue], log=lambda s: None)
    pic = result.image.astype(float)
    lh, rh = pic[:, :cols // 2 - 4], pic[:, cols // 2 + 4:]
    assert lh[..., 0].mean() - lh[..., 2].mean() > 60  # the left half went red
    assert rh[..., 2].mean() - rh[..., 0].mean() > 60  # the right half went blue
    if scales or (loss, color_loss) == ("gram", "sliced"):
        return  # the control below, once per style loss
    # Without masks both paintings pull everywhere: a blend (fewer steps show it).
    unmasked = stylize(config.replace(style_masks=None, iterations=12), content=photo,
                       style=[red, blue], log=lambda s: None).image.astype(float)
    for half in (unmasked[:, :cols // 2 - 4], unmasked[:, cols // 2 + 4:]):  # a blend
        assert abs(half[..., 0].mean() - half[..., 2].mean()) < 40


def test_bad_masks_are_one_line_exit_2_and_write_nothing(files, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    black = save(tmp_path / "black.png", np.zeros((48, 64), np.uint8))
    out = tmp_path / "out"
    base = [f"--content_image={files['content']}", f"--style_image={files['s1']},{files['s2']}",
            "--weights=random", "--img_nrows=48", "--iterations=1", f"--output_dir={out}",
            f"--content_layers={CONTENT[0]}", f"--style_layers={','.join(STYLE)}"]
    cases = [
        ([f"--style_masks={tmp_path / 'missing.png'},{files['m2']}"], "does not exist"),
        ([f"--style_masks={files['m1']}"], "has 1 masks but there are 2 style images"),
        ([f"--style_masks={black},{files['m2']}"], "black everywhere"),
        ([f"--style_masks={text},{files['m2']}"], "notes.png"),
        (["--color_weight=1", "--preserve_colors=luminance"], "--color_weight"),
        (["--style_loss=sliced_wasserstein", "--tile_size=64"],
         "--style_loss=sliced_wasserstein cannot be tiled"),
        (["--color_weight=1", "--color_loss=sliced", "--tile_size=64"],
         "--color_loss=sliced cannot be tiled"),
    ]
    for extra, message in cases:
        assert run_main(["nst_keras.run", *base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (extra, err)
    assert not out.exists()
    # The good masks run.
    assert run_main(["nst_keras.run", *base, f"--style_masks={files['m1']},{files['m2']}"]) == 0
    assert os.path.isfile(out / "c_stylized.png")

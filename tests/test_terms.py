"""The loss-term contract: every term is ``finish(sums)``, the tiled objective is the
untiled one for every tileable term (the film's temporal term included), a term
that cannot be tiled stops a tiled run in one line, and a worker's cache reuses
one compiled step per shape with exactly the results of a fresh one."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import make_picture, objective_of
from nst_keras.engine import objective, vgg
from nst_keras.engine.terms import WHOLE, ContentTerm, StyleTerm, Term, TotalVariationTerm
from nst_keras.errors import UserError
from nst_keras.video import temporal

ROWS, COLS, TILE = 96, 128, 64
CONTENT, STYLE = ["block2_conv2"], ["block1_conv1", "block2_conv1"]
KW = dict(content_layers=CONTENT, style_layers=STYLE, content_weight=1.0, style_weight=10.0,
          total_variation_weight=0.1, normalization="scaled")


@pytest.fixture(scope="module")
def extractor(backbone):
    return vgg.build_extractor(backbone, CONTENT + STYLE)


def network_image(seed, rows=ROWS, cols=COLS):
    return vgg.preprocess_image(make_picture(rows, cols, seed))


def test_each_term_is_finish_of_sums_and_its_sums_add_over_a_partition(extractor):
    content, style = network_image(0), network_image(1)
    built = objective_of(extractor, content, [style], **KW)
    x = tf.constant(content + 7.0)
    feats = built.raw_features(x)
    assert {t.name for _, t in built.items} == {"content_loss", "style_loss", "tv_loss"}
    for _, term in built.items:
        sums = term.sums(feats, x, term.inputs(None), WHOLE)
        assert float(term.finish(sums)) == pytest.approx(float(term.value(feats, x)), rel=1e-6)
    # The style term's sums are raw Gram matrices: the two halves of a map add up.
    style_term = built.term("style_loss")
    fmap = feats["block1_conv1"]
    halves = [fmap[:, :ROWS // 2], fmap[:, ROWS // 2:]]
    total = sum(style_term.sums({"block1_conv1": h, "block2_conv1": feats["block2_conv1"]},
                                x, {}, WHOLE)["block1_conv1"] for h in halves)
    whole = style_term.sums(feats, x, {}, WHOLE)["block1_conv1"]
    np.testing.assert_allclose(total.numpy(), whole.numpy(), rtol=1e-5)


def test_the_objective_is_the_weighted_sum_of_its_terms(extractor):
    built = objective_of(extractor, network_image(0), [network_image(1)], **KW)
    terms = built.terms_fn(tf.constant(network_image(2)))  # eager: one call
    want = 1.0 * terms["content_loss"] + 10.0 * terms["style_loss"] + 0.1 * terms["tv_loss"]
    assert float(terms["loss"]) == pytest.approx(float(want), rel=1e-6)
    off = objective_of(extractor, network_image(0), [network_image(1)],
                                    **{**KW, "total_variation_weight": 0.0})
    assert off.term("tv_loss") is None
    assert float(off.terms_fn(tf.constant(network_image(2)))["tv_loss"]) == 0.0


def test_the_temporal_term_is_exact_under_tiling(extractor):
    rng = np.random.default_rng(4)
    content = network_image(0)
    target = content + rng.normal(0, 20, content.shape).astype(np.float32)
    mask = (rng.uniform(size=(ROWS, COLS)) > 0.3).astype(np.float32)
    term = temporal.TemporalTerm.build([target], [mask], "scaled", content)
    extra = [(temporal.NAME, 3.0, term)]
    untiled = objective_of(extractor, content, [network_image(1)], **KW,
                                        extra_terms=extra)
    tiled = objective_of(extractor, content, [network_image(1)],
                                         tile_size=TILE, halo=32, **KW, extra_terms=extra)
    assert len(tiled.tiles(content)) == 4
    x = tf.constant(content + rng.normal(0, 10, content.shape).astype(np.float32))
    ref_terms, ref_grad = untiled.value_and_grad(x)
    terms, grad = tiled.value_and_grad(x)
    for name in ("loss", temporal.NAME, "content_loss", "style_loss", "tv_loss"):
        assert float(terms[name]) == pytest.approx(float(ref_terms[name]), rel=1e-5), name
    assert float(ref_terms[temporal.NAME]) > 0
    err = np.linalg.norm(grad.numpy() - ref_grad.numpy()) / np.linalg.norm(ref_grad.numpy())
    assert err < 1e-4


class Untileable(Term):
    name = "global_loss"
    tileable = False

    def sums(self, features, image, inputs, part):
        return tf.reduce_sum(image)

    def finish(self, sums):
        return tf.square(sums)


def test_a_term_that_cannot_be_tiled_stops_a_tiled_run_in_one_line(extractor):
    with pytest.raises(UserError) as info:
        objective_of(extractor, network_image(0), [network_image(1)],
                                     tile_size=TILE, halo=32, **KW,
                                     extra_terms=[("global_loss", 1.0, Untileable())])
    text = str(info.value)
    assert "global_loss cannot be tiled" in text and "\n" not in text
    # Untiled it simply joins the list.
    built = objective_of(extractor, network_image(0), [network_image(1)], **KW,
                                      extra_terms=[("global_loss", 1.0, Untileable())])
    x = tf.constant(network_image(2))
    assert float(built.terms_fn(x)["global_loss"]) == pytest.approx(
        float(tf.reduce_sum(x)) ** 2, rel=1e-5)


def _halves(seed, rows=ROWS, cols=COLS):
    """Two complementary masks (a style per region), the split moved by ``seed``."""
    left = np.zeros((1, rows, cols, 1), np.float32)
    left[:, :, :cols // 2 + 4 * seed] = 1.0
    return [left, 1.0 - left]


# Every kind of term: the tutorial's, each distribution loss, the colour terms, masks.
REUSED = {
    "gram": {},
    "gram+color": dict(color_weight=3.0),
    "wasserstein": dict(style_loss="wasserstein"),
    "sliced": dict(style_loss="sliced_wasserstein", color_weight=2.0, color_loss="sliced"),
    "masked_gram": dict(masked=True),
    "masked_wasserstein+color": dict(style_loss="wasserstein", color_weight=3.0, masked=True),
}


@pytest.mark.parametrize("kind", list(REUSED))
def test_a_cached_objective_is_reused_with_the_results_of_a_fresh_one(extractor, kind):
    extra = dict(REUSED[kind])
    masked = extra.pop("masked", False)
    kw = {**KW, **extra}

    small = dict(rows=48, cols=64)  # not tiled: any size

    def built(photo, paintings, cache=None):
        return objective_of(extractor, network_image(photo, **small),
                            [network_image(p, **small) for p in paintings],
                            style_masks=_halves(photo, **small) if masked else None,
                            target_cache=cache, **kw)

    paintings = ([1, 4], [3, 6]) if masked else ([1], [3])
    cache = objective.TargetCache()
    first = built(0, paintings[0], cache)
    x = tf.constant(network_image(5, **small))
    first.at_step(1)
    first.value_and_grad(x)
    second = built(2, paintings[1], cache)
    assert second is first and cache.reused == 1
    fresh = built(2, paintings[1])
    for objective_ in (second, fresh):
        objective_.at_step(1)
    # The fresh one eagerly (its only call: no trace), except the sliced terms:
    # a value next to a histogram bin's edge may fall in the other bin when
    # eager and traced operations round differently.
    fresh_value = fresh.value_and_grad if kind == "sliced" else fresh.value_and_grad_fn
    (t1, g1), (t2, g2) = second.value_and_grad(x), fresh_value(x)
    assert set(t1) == set(t2)
    for name in t2:
        assert float(t1[name]) == pytest.approx(float(t2[name]), rel=1e-5), name
    np.testing.assert_allclose(g1.numpy(), g2.numpy(), rtol=1e-4,
                               atol=1e-5 * np.abs(g2.numpy()).max())
    # ... and it differs from the first picture's objective: the targets were taken.
    t0 = built(0, paintings[0]).terms_fn(x)  # eagerly: only its loss is compared
    assert float(t0["loss"]) != pytest.approx(float(t2["loss"]), rel=1e-3)
    assert second.value_and_grad.experimental_get_tracing_count() == 1
    # Another size or another weight is another step.
    other = objective_of(extractor, network_image(2, **small), [network_image(3, **small)],
                         **{**kw, "style_weight": 11.0}, target_cache=cache,
                         style_masks=_halves(2, **small) if masked else None)
    assert other is not first and len(cache.objectives) == 2


def test_terms_report_the_state_an_objective_adopts():
    assert ContentTerm.state_names == ("targets", "factors")
    assert StyleTerm.state_names == ("targets", "factors")
    assert TotalVariationTerm.state_names == ("factor",)
    assert temporal.TemporalTerm.state_names == ("targets", "weights", "factor")


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lbfgs"])
def test_a_worker_that_reuses_its_step_makes_the_pictures_of_fresh_runs(tmp_path, optimizer):
    from PIL import Image

    from nst_keras import batch, settings

    paths = []
    for seed in range(3):
        path = tmp_path / f"p{seed}.png"
        Image.fromarray(make_picture(48, 64, seed)).save(path)
        paths.append(str(path))
    config = settings.Config(weights="random", seed=3, img_nrows=48, iterations=3,
                             optimizer=optimizer, precision="float32", log_every=1,
                             save_every=0, content_layers=CONTENT, style_layers=STYLE,
                             loss_normalization="scaled", content_weight=1.0,
                             style_weight=10.0, total_variation_weight=0.1)
    items = batch.make_items(paths[:2], paths[2])
    cache = batch.new_cache()
    for item in items:
        assert batch.run_item(config, item, str(tmp_path / "shared"), cache)["status"] == \
            "finished"
        assert batch.run_item(config, item, str(tmp_path / "fresh"),
                              batch.new_cache())["status"] == "finished"
    assert cache.reused == 1  # the second item ran on the first item's step
    for item in items:
        name = f"{item.name}/{item.name.split('__')[0]}_stylized.png"
        shared = np.asarray(Image.open(tmp_path / "shared" / name))
        fresh = np.asarray(Image.open(tmp_path / "fresh" / name))
        np.testing.assert_array_equal(shared, fresh)


def test_the_runs_of_a_thread_reuse_its_kept_step_and_give_fresh_pictures():
    """Two runs in a row without a cache of their own: the second takes the
    first's compiled step (nothing traced again) and makes the picture a run
    with an empty cache makes; another thread keeps its own."""
    import threading

    from nst_keras import settings
    from nst_keras.engine import pipeline

    config = settings.Config(weights="random", seed=3, img_nrows=48, iterations=3,
                             optimizer="adam", precision="float32", log_every=1,
                             save_every=0, content_layers=CONTENT, style_layers=STYLE)
    painting = make_picture(40, 56, 7)
    pipeline.forget_kept()
    kept = pipeline.kept_cache()
    first = pipeline.stylize(config, make_picture(48, 64, 0), painting, log=lambda s: None)
    second = pipeline.stylize(config, make_picture(48, 64, 1), painting, log=lambda s: None)
    assert pipeline.kept_cache() is kept and kept.reused == 1
    (objective_,), ((_, optimizer),) = kept.objectives.values(), kept.optimizers.values()
    assert objective_.value_and_grad.experimental_get_tracing_count() <= 1
    assert optimizer._step.experimental_get_tracing_count() == 1
    fresh = pipeline.stylize(config, make_picture(48, 64, 1), painting, log=lambda s: None,
                             target_cache=objective.TargetCache())
    np.testing.assert_array_equal(second.image, fresh.image)
    assert not np.array_equal(first.image, second.image)
    assert [r["loss"] for r in second.history] == [r["loss"] for r in fresh.history]
    other = []
    thread = threading.Thread(target=lambda: other.append(pipeline.kept_cache()))
    thread.start()
    thread.join()
    assert other[0] is not kept
    pipeline.forget_kept()
    assert pipeline.kept_cache() is not kept


def test_a_kept_cache_holds_at_most_its_budget():
    """The oldest go first past the budget, an objective's optimisers with it,
    and one larger than the whole budget is used but not kept."""
    four = np.zeros((1, 16, 16, 1), np.float32)  # 1 KiB
    assert objective.held_bytes(four, [tf.zeros((2, 2)), {"a": tf.Variable(tf.zeros(4))}]) \
        == 1024 + 16 + 16
    cache = objective.TargetCache(budget=2048)
    size = objective.held_bytes
    assert cache.keep(cache.optimizers, (1, "a"), lambda: four, size) is four
    assert cache.keep(cache.objectives, "x", lambda: four, size) is four
    assert list(cache.optimizers) == [(1, "a")] and list(cache.objectives) == ["x"]
    cache.keep(cache.objectives, "y", lambda: four, size)  # over: the oldest goes
    assert not cache.optimizers and list(cache.objectives) == ["x", "y"]
    big = np.zeros((1, 32, 32, 1), np.float32)  # 4 KiB: more than the whole budget
    assert cache.keep(cache.objectives, "z", lambda: big, size) is big
    assert list(cache.objectives) == ["x", "y"] and cache.held() == 2048
    owner = cache.keep(cache.objectives, "x", None)  # used again: now the newest
    cache.keep(cache.optimizers, (id(owner), "b"), lambda: np.zeros(1, np.float32), size)
    assert list(cache.objectives) == ["x"]  # "y", the least recently used, made room
    cache._drop(cache.objectives, "x")  # dropping an objective drops its optimisers
    assert not cache.optimizers and not cache.sizes


def test_the_add_a_loss_example_of_the_architecture_page_works_as_written(extractor,
                                                                          monkeypatch):
    """docs/architecture.md's worked example: one class, selected, built, tiled, reused."""
    import os
    import re

    from conftest import REPO
    from nst_keras.engine import build, distributions

    page = open(os.path.join(REPO, "docs", "architecture.md"), encoding="utf-8").read()
    section = page.split("### Adding a loss", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {"Term": Term, "moments": distributions.moments, "tf": tf}
    exec(code, namespace)  # noqa: S102 - the page's own example
    mean_term = namespace["MeanStyleTerm"]
    monkeypatch.setattr(build, "TERMS", (*build.TERMS, mean_term))
    kw = {**KW, "style_loss": "mean"}
    photo, painting = network_image(0), network_image(1)
    whole = objective_of(extractor, photo, [painting], **kw)
    assert isinstance(whole.term("style_loss"), mean_term)
    x = tf.constant(network_image(2))
    feats = {k: v.numpy() for k, v in whole.features(x).items()}
    target = {k: v.numpy() for k, v in whole.features(tf.constant(painting)).items()}
    want = sum(np.sum((feats[k].mean((0, 1, 2)) - target[k].mean((0, 1, 2))) ** 2)
               for k in STYLE) / len(STYLE)
    terms, grad = whole.value_and_grad(x)
    assert float(terms["style_loss"]) == pytest.approx(want, rel=1e-4) and want > 0
    tiled_terms, tiled_grad = objective_of(extractor, photo, [painting], tile_size=TILE,
                                           halo=32, **kw).value_and_grad(x)
    assert float(tiled_terms["style_loss"]) == pytest.approx(want, rel=1e-4)
    assert np.linalg.norm(tiled_grad - grad) < 1e-3 * np.linalg.norm(grad)
    cache = objective.TargetCache()
    first = objective_of(extractor, photo, [painting], target_cache=cache, **kw)
    again = objective_of(extractor, network_image(3), [network_image(4)], target_cache=cache,
                         **kw)
    assert again is first and cache.reused == 1

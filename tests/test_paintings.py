"""Several paintings in one network (conditional instance normalisation,
blended at run time in run, batch, Python and the exported files) and the
training's stability term, with tiny networks, random VGG weights and
pictures made here."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import kept_trainers, make_picture, run_cli
from nst_keras import settings

SHALLOW = dict(weights="random", seed=3, content_layers=("block2_conv2",),
               style_layers=("block1_conv1", "block2_conv1"), precision="float32")


def quiet(line):
    pass


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """A network trained for a few steps on three paintings: its run folder, the
    run's record, the paintings, the training's options and objective, and the
    trainer the run stepped (its step already traced)."""
    from nst_keras import train

    d = tmp_path_factory.mktemp("three")
    (d / "photos").mkdir()
    for i in range(4):
        Image.fromarray(make_picture(40, 48, i)).save(d / "photos" / f"p{i}.png")
    paintings = []
    for i, seed in enumerate((11, 12, 13)):
        path = d / f"painting{i}.png"
        Image.fromarray(make_picture(36, 44, seed)).save(path)
        paintings.append(str(path))
    opts = train.TrainOptions(photos=str(d / "photos"), output=str(d / "net.keras"),
                              output_dir=str(d / "run"), steps=9, image_size=32,
                              batch_size=2, network_width=0.125, learning_rate=5e-3,
                              log_every=1, checkpoint_every=100, preview_every=0)
    cfg = settings.Config(style_image=",".join(paintings), style_weight=10.0,
                          loss_normalization="scaled", content_weight=1.0, **SHALLOW)
    with kept_trainers() as made:
        record = train.train(opts, cfg, quiet)
    assert len(made) == 1
    return d, record, paintings, opts, cfg, made[0]


@pytest.fixture(scope="module")
def net(three):
    """The three-painting network, loaded from its file."""
    from nst_keras import load_network

    return load_network(str(three[0] / "net.keras"))


def test_the_network_holds_one_scale_and_shift_per_painting(three, net):
    from nst_keras.engine.network import ConditionalInstanceNormalization

    d, record = three[:2]
    assert record["status"] == "finished"
    assert net.styles == 3
    norms = [l for l in net.model.layers if isinstance(l, ConditionalInstanceNormalization)]
    assert norms and all(l.gamma.shape[0] == 3 and l.beta.shape[0] == 3 for l in norms)
    # Training moved the three paintings' rows apart (they start equal).
    gammas = np.concatenate([np.asarray(l.gamma) for l in norms], axis=1)
    assert np.abs(gammas[0] - gammas[1]).max() > 1e-3 and np.abs(gammas[1] - gammas[2]).max() > 1e-3
    on_disk = json.loads((d / "run" / "run.json").read_text())
    assert on_disk["paintings"] == 3
    lines = [json.loads(l) for l in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [l["painting"] for l in lines] == [0, 1, 2] * 3
    sheet = np.asarray(Image.open(d / "run" / "preview.png"))
    assert sheet.shape[0] == 4 * 32  # the photos over one row per painting


def test_each_paintings_loss_falls_on_a_fixed_batch(three):
    """The run's own trainer (one objective per painting), stepped on on one batch."""
    from nst_keras.engine import network, training

    trainer = three[-1]
    assert trainer.styles == 3 and len(trainer.objectives) == 3
    photos = np.stack([make_picture(32, 32, i) for i in (1, 2)]).astype(np.float32)
    losses = [trainer.step(i, photos)["loss"] for i in range(30)]
    for k in range(3):
        own = losses[k::3]
        assert own[-1] < 0.8 * own[0], (k, own)
    with pytest.raises(ValueError, match="needs as many objectives"):
        training.Trainer(network.build_network(0.125, seed=0, styles=2), trainer.objectives,
                         training.make_optimizer(5e-3, "float32"))


def test_the_paintings_share_one_traced_step_that_takes_each_paintings_targets(three):
    """One trace for three paintings; with painting k's numbers put in, the shared
    objective gives painting k's own objective's loss."""
    import tensorflow as tf

    trainer = three[-1]
    assert trainer.shared and trainer._steps[0].experimental_get_tracing_count() == 1
    photos = tf.constant(np.stack([make_picture(32, 32, i) for i in (3, 4)]), tf.float32)
    losses = []
    for k in (1, 2, 0):
        trainer._hold(k)
        pictures = trainer._picture(photos, k)
        losses.append(float(trainer.objective(photos, pictures)["style_loss"]))
        if k:
            own = float(trainer.objectives[k](photos, pictures)["style_loss"])
            assert losses[-1] == pytest.approx(own, rel=1e-6), k
    assert len({round(v, 6) for v in losses}) == 3  # the paintings' targets differ


def test_blends_give_pictures_between_the_pure_ones(net):
    photo = make_picture(36, 44, 5)
    pure = [net(photo, blend=w).astype(float) for w in ([1, 0, 0], [0, 1, 0], [0, 0, 1])]
    apart = np.abs(pure[0] - pure[1]).mean()
    assert apart > 1.0  # the paintings give different pictures
    half = net(photo, blend=[1, 1, 0]).astype(float)  # normalised to 0.5, 0.5
    assert np.abs(half - pure[0]).mean() < 0.8 * apart
    assert np.abs(half - pure[1]).mean() < 0.8 * apart
    assert np.abs(half - (pure[0] + pure[1]) / 2).mean() < 0.5 * apart
    equal = net(photo).astype(float)  # no blend: equal weights
    assert np.abs(equal - net(photo, blend=[1, 1, 1])).max() <= 1
    with pytest.raises(ValueError, match="give 3 blend weights, not 2"):
        net(photo, blend=[1, 0])
    with pytest.raises(ValueError, match="positive sum"):
        net(photo, blend=[0, 0, 0])


def test_run_and_batch_take_the_blend(three, net, tmp_path, capsys):
    from nst_keras import batch

    d = three[0]
    net_path = str(d / "net.keras")
    photo_path = d / "photos" / "p1.png"
    out = tmp_path / "run"
    assert run_cli(f"--network={net_path}", f"--content_image={photo_path}",
                   f"--output_dir={out}", "--img_nrows=40", "--style_blend_weights=0,0,1") == 0
    written = np.asarray(Image.open(out / "p1_stylized.png")).astype(int)
    photo = np.asarray(Image.open(photo_path))
    assert np.abs(written - net(photo, blend=[0, 0, 1])).max() <= 1
    assert np.abs(written - net(photo, blend=[1, 0, 0])).mean() > 1.0
    folder = tmp_path / "batch"
    assert batch.main(["nst_keras.batch", f"--network={net_path}",
                       f"--content_image={d / 'photos'}", f"--output_dir={folder}",
                       "--img_nrows=40", "--style_blend_weights=0,1,0"]) == 0
    got = np.asarray(Image.open(folder / "p1_stylized.png")).astype(int)
    assert np.abs(got - net(photo, blend=[0, 1, 0])).max() <= 1
    capsys.readouterr()
    assert run_cli(f"--network={net_path}", f"--content_image={photo_path}",
                   f"--output_dir={tmp_path / 'bad'}", "--style_blend_weights=1,1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --style_blend_weights has 2 weights but the network holds 3 "
                   "painting(s); give 3 weights"]
    assert not (tmp_path / "bad").exists()
    assert batch.main(["nst_keras.batch", f"--network={net_path}",
                       f"--content_image={d / 'photos'}", f"--output_dir={tmp_path / 'bad2'}",
                       "--style_blend_weights=1,0,0,0"]) == 2
    assert "holds 3 painting(s)" in capsys.readouterr().err
    assert not (tmp_path / "bad2").exists()


def test_the_exported_files_keep_the_blend_as_an_input(three, net, tmp_path):
    import tensorflow as tf

    from nst_keras import export

    net_path = str(three[0] / "net.keras")
    model = net.model
    photos = np.stack([make_picture(40, 52, 1), make_picture(40, 52, 2)]).astype(np.float32)
    style = np.array([[1, 0, 0], [0.25, 0.25, 0.5]], np.float32)
    want = model([photos, style]).numpy()
    lite = tmp_path / "net.tflite"
    assert export.main(["export", f"--network={net_path}", f"--output={lite}"]) == 0
    interpreter = tf.lite.Interpreter(model_path=str(lite))
    details = interpreter.get_input_details()
    assert sorted(len(i["shape_signature"]) for i in details) == [2, 4]  # style, photo
    by_rank = {len(i["shape_signature"]): i["index"] for i in details}
    interpreter.resize_tensor_input(by_rank[4], photos.shape)
    interpreter.resize_tensor_input(by_rank[2], style.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(by_rank[4], photos)
    interpreter.set_tensor(by_rank[2], style)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert np.abs(got - want).max() <= 2.0
    folder = tmp_path / "saved"
    assert export.main(["export", f"--network={net_path}", f"--output={folder}",
                        "--format=saved_model"]) == 0
    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    got = serve(photo=tf.constant(photos), style=tf.constant(style))["stylized"].numpy()
    assert np.abs(got - want).max() <= 2.0


def test_training_refuses_a_blend_of_its_paintings(three, tmp_path, capsys):
    from nst_keras.train.__main__ import main

    d, _, paintings = three[:3]
    rc = main(["nst_keras.train", f"--photos={d / 'photos'}", f"--style_image={','.join(paintings)}",
               f"--output_dir={tmp_path / 'r'}", f"--output={tmp_path / 'n.keras'}",
               "--weights=random", "--image_size=32", "--batch_size=2",
               "--style_blend_weights=1,1,1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "leave --style_blend_weights out of the training" in err[0]
    assert not (tmp_path / "r").exists()


# -- stability ------------------------------------------------------------------------------


def test_the_stability_term_is_zero_for_a_moved_copy_and_grows_with_the_change():
    import tensorflow as tf

    from nst_keras.engine import training
    from nst_keras.engine.terms import WHOLE

    term = training.StabilityTerm(factor=32 * 32, max_shift=3, noise=0.0, margin=4)
    rng = np.random.default_rng(0)
    image = rng.uniform(-100, 100, (2, 32, 32, 3)).astype(np.float32)
    for dy, dx in ((1, 1), (0, 2), (3, 1), (2, 0)):
        moved = image[:, dy:, dx:, :]  # the picture of the moved photo, if stable
        value = term.finish(term.sums({}, tf.constant(image), {
            "moved": tf.constant(moved), "shift": tf.constant([dy, dx])}, WHOLE))
        assert float(value) == pytest.approx(0.0, abs=1e-9)
    unmoved = image[:, :31, :29, :]  # the right size for (1, 3), but not moved
    wrong = term.finish(term.sums({}, tf.constant(image), {
        "moved": tf.constant(unmoved), "shift": tf.constant([1, 3])}, WHOLE))
    assert float(wrong) > 1.0
    moved = image[:, 2:, 2:, :] + 5.1  # 5.1 grey levels off everywhere: (5.1/255)^2 each
    value = term.finish(term.sums({}, tf.constant(image), {
        "moved": tf.constant(moved), "shift": tf.constant([2, 2])}, WHOLE))
    assert float(value) == pytest.approx(32 * 32 * (5.1 / 255) ** 2, rel=1e-4)
    # Draws are the seed's and the step's (a resumed run draws the same).
    assert [term.draw(4, s) for s in range(20)] == [term.draw(4, s) for s in range(20)]
    # Rows and columns apart: every (dy, dx) of 0..3 but (0, 0).
    assert set(term.draw(4, s) for s in range(300)) == {
        (dy, dx) for dy in range(4) for dx in range(4)} - {(0, 0)}
    photos = tf.constant(rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32))
    noisy = training.StabilityTerm(1.0, noise=2.0).moved_photos(
        photos, tf.constant([3, 1]), tf.constant([1, 2]))
    assert noisy.shape == (2, 29, 31, 3)
    assert 1.5 < float(tf.math.reduce_std(noisy - photos[:, 3:, 1:])) < 2.5
    # On two devices (tests/conftest.py) each replica takes its share of the same noise.
    from nst_keras.engine import tiling

    strategy = tiling.make_strategy("CPU:0,CPU:1")
    shares = strategy.experimental_distribute_values_from_function(
        lambda ctx: photos[ctx.replica_id_in_sync_group:ctx.replica_id_in_sync_group + 1])
    spread = strategy.run(lambda p: training.StabilityTerm(1.0, noise=2.0).moved_photos(
        p, tf.constant([3, 1]), tf.constant([1, 2])), args=(shares,))
    together = np.concatenate([v.numpy() for v in strategy.experimental_local_results(spread)])
    np.testing.assert_allclose(together, noisy.numpy(), rtol=0, atol=1e-4)


def test_training_with_stability_reports_the_term_and_adds_it_to_the_loss(backbone, tmp_path):
    import tensorflow as tf

    from conftest import objective_of
    from nst_keras.engine import network, training, vgg

    extractor = vgg.build_extractor(backbone, ["block2_conv2", "block1_conv1"])
    photos = np.stack([make_picture(32, 32, i) for i in (1, 2)]).astype(np.float32)
    objective = objective_of(extractor, vgg.preprocess_image(photos[0].astype(np.uint8)),
                             [vgg.preprocess_image(make_picture(32, 40, 5))],
                             content_layers=["block2_conv2"], style_layers=["block1_conv1"],
                             loss_normalization="scaled", content_weight=1.0, style_weight=10.0)
    term = training.StabilityTerm(32 * 32, noise=0.0, margin=4)

    net = network.build_network(0.125, seed=0)
    batch = training.BatchObjective(objective, extractor)
    # The loss without the term, of the network as it starts (what the first step reports).
    plain = float(batch(tf.constant(photos), net(photos, training=True))["loss"])
    stable = training.Trainer(net, batch, training.make_optimizer(1e-2, "float32"),
                              stability=(50.0, term), seed=1)
    b = stable.step(0, photos)
    assert b["stability"] > 0
    assert b["loss"] == pytest.approx(plain + 50.0 * b["stability"], rel=1e-4)
    for i in range(1, 8):
        b = stable.step(i, photos)
    assert np.isfinite(b["loss"]) and "stability" in b


def test_a_run_from_before_the_stability_settings_resumes(three, tmp_path):
    """A run.json without the stability fields (an earlier version) had them off."""
    import dataclasses
    import shutil

    from nst_keras import train

    d, _, _, opts, cfg, _ = three
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    run_json = run / "run.json"
    record = json.loads(run_json.read_text())
    for name in ("stability_weight", "stability_shift", "stability_noise"):
        del record["settings"]["train"][name]
    run_json.write_text(json.dumps(record))

    def again(steps, **extra):
        return dataclasses.replace(opts, steps=steps, output=str(tmp_path / "net.keras"),
                                   output_dir=None, resume=str(run), **extra)

    with kept_trainers() as made:  # more steps, the same network: the kept trainer goes on
        done = train.train(again(opts.steps + 1), cfg, quiet)
    assert done["status"] == "finished" and done["resumed_from"] == opts.steps and made == []
    assert done["step"] == opts.steps + 1
    with pytest.raises(Exception, match=r"--stability_weight=5.0 differs from the run.s --stability_weight=0.0"):
        train.train(again(opts.steps + 2, stability_weight=5.0), cfg, quiet)

"""Training style networks (``nst_keras.train``), using them (``--network``,
``load_network``, batches) and exporting them (``nst_keras.export``), with tiny
networks, random VGG weights and small pictures made here."""

import json
import os
import signal

import numpy as np
import pytest
from PIL import Image

from conftest import kept_trainers, make_picture
from nst_keras import settings
from nst_keras.errors import Interrupted, UserError

SHALLOW = dict(weights="random", seed=3, content_layers=("block2_conv2",),
               style_layers=("block1_conv1", "block2_conv1"), precision="float32")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six photos (one in a sub-folder, one WebP) and a damaged file."""
    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    for i in range(5):
        Image.fromarray(make_picture(40 + 4 * i, 52, i)).save(d / f"p{i}.png")
    Image.fromarray(make_picture(44, 60, 7)).save(d / "sub" / "deep.webp")
    (d / "broken.jpg").write_bytes(b"not a picture")
    (d / "notes.txt").write_text("not a photo")
    return d


@pytest.fixture(scope="module")
def painting(tmp_path_factory):
    path = tmp_path_factory.mktemp("painting") / "painting.png"
    Image.fromarray(make_picture(36, 44, 9)).save(path)
    return str(path)


def options(photos, out, **changes):
    from nst_keras.train import TrainOptions

    values = dict(photos=str(photos), output=str(out / "net.keras"),
                  output_dir=str(out / "run"), steps=4, image_size=32, batch_size=2,
                  network_width=0.125, learning_rate=2e-3, log_every=1,
                  checkpoint_every=100, preview_every=0)
    values.update(changes)
    return TrainOptions(**values)


def config(painting, **changes):
    return settings.Config(style_image=painting, **{**SHALLOW, **changes})


def quiet(line):
    pass


# -- data --------------------------------------------------------------------------


def test_the_photos_are_found_recursively_and_damaged_ones_skipped(photos):
    from nst_keras.train import data

    good, bad = data.find_photos(str(photos), 2)
    assert sorted(os.path.basename(p) for p in good) == [
        "deep.webp", "p0.png", "p1.png", "p2.png", "p3.png", "p4.png"]
    assert [os.path.basename(p) for p in bad] == ["broken.jpg"]
    with pytest.raises(UserError, match=r"holds 6 readable photo\(s\) \(1 unreadable"):
        data.find_photos(str(photos), 7)


def test_each_steps_batch_is_a_function_of_the_seed_and_the_step(photos):
    from nst_keras.train import data

    good, _ = data.find_photos(str(photos), 2)
    a, b = data.Photos(good, 32, 2, seed=1), data.Photos(good, 32, 2, seed=1)
    assert a.batch(5).shape == (2, 32, 32, 3) and a.batch(5).dtype == np.uint8
    assert np.array_equal(a.batch(5), b.batch(5))  # a fresh reader (a resumed run) agrees
    assert not np.array_equal(a.batch(5), a.batch(6))
    assert not np.array_equal(a.batch(5), data.Photos(good, 32, 2, seed=2).batch(5))
    # Every photo is seen once per epoch (3 steps of 2 photos for 6 photos).
    firsts = {tuple(a.photo(i)[0, 0]) for i in range(6)}
    assert len(firsts) == 6
    streamed = list(a.dataset(4, 7).as_numpy_iterator())
    assert len(streamed) == 3 and all(np.array_equal(x, a.batch(4 + i))
                                      for i, x in enumerate(streamed))


# -- the loss on a batch --------------------------------------------------------------


def test_the_batch_loss_is_the_mean_of_each_photos_own_objective(backbone):
    """The content term of each picture compares it with its own photo; every term is
    the run command's (keras_io normalisation: no factor depends on a photo)."""
    import tensorflow as tf

    from conftest import objective_of
    from nst_keras.engine import training, vgg

    extractor = vgg.build_extractor(backbone, ["block2_conv2", "block1_conv1", "block2_conv1"])
    photos = np.stack([make_picture(32, 32, 1), make_picture(32, 32, 2)]).astype(np.float32)
    outs = np.stack([make_picture(32, 32, 3), make_picture(32, 32, 4)]).astype(np.float32)
    style = vgg.preprocess_image(make_picture(32, 40, 5))
    kw = dict(content_layers=["block2_conv2"], style_layers=["block1_conv1", "block2_conv1"],
              content_weight=1.0, style_weight=1e-2, total_variation_weight=1e-4)
    batch = training.BatchObjective(
        objective_of(extractor, vgg.preprocess_image(photos[0].astype(np.uint8)), [style], **kw),
        extractor)
    got = batch(tf.constant(photos), tf.constant(outs))
    want = {}
    for photo, out in zip(photos, outs):
        single = objective_of(extractor, vgg.preprocess_image(photo.astype(np.uint8)), [style],
                              **kw)
        values = single.terms(tf.constant(vgg.preprocess_image(out.astype(np.uint8))))
        for k in ("loss", "content_loss", "style_loss", "tv_loss"):
            want[k] = want.get(k, 0.0) + float(values[k]) / 2
    for k, v in want.items():
        assert float(got[k]) == pytest.approx(v, rel=1e-4), k
    assert float(got["content_loss"]) > 0


def test_the_loss_falls_over_a_few_steps_on_a_fixed_batch(straight):
    """The training command's trainer (its objective from ``training_config``), stepped
    on on one batch."""
    trainer = straight[2]
    photos = np.stack([make_picture(32, 32, i) for i in (1, 2)]).astype(np.float32)
    losses = [trainer.step(i, photos)["loss"] for i in range(6, 18)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0], losses


# -- the command: run folder, resume, interrupt -----------------------------------------


STRAIGHT = dict(steps=6, preview_every=2)  # the uninterrupted run's options


@pytest.fixture(scope="module")
def straight(photos, painting, tmp_path_factory):
    """A six-step training run with previews, not interrupted: its folder, its
    record and the trainer it stepped."""
    from nst_keras import train

    out = tmp_path_factory.mktemp("straight")
    with kept_trainers() as made:
        record = train.train(options(photos, out, **STRAIGHT), config(painting), quiet)
    assert len(made) == 1
    return out, record, made[0]


def test_training_writes_the_run_folder_and_a_network_that_loads(straight):
    from nst_keras import load_network

    out, record, _ = straight
    run = out / "run"
    assert record["status"] == "finished" and record["step"] == 6
    on_disk = json.loads((run / "run.json").read_text())
    assert on_disk["photos"]["used"] == 6 and on_disk["photos"]["skipped"] == 1
    assert on_disk["settings"]["train"]["image_size"] == 32
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["iteration"] for l in lines] == [1, 2, 3, 4, 5, 6]
    assert all(l["loss"] > 0 and "style_loss" in l for l in lines)
    assert (run / "loss.png").stat().st_size > 0
    sheet = np.asarray(Image.open(run / "preview.png"))
    assert sheet.shape == (64, 4 * 32, 3)  # four photos over their pictures
    with np.load(run / "checkpoint.npz") as ckpt:
        assert int(ckpt["step"]) == 6
    net = load_network(str(out / "net.keras"))
    photo = make_picture(30, 42, 3)
    picture = net(photo)
    assert picture.shape == (30, 42, 3) and picture.dtype == np.uint8
    both = net(np.stack([photo, make_picture(30, 42, 4)]))
    assert both.shape == (2, 30, 42, 3) and np.abs(both[0].astype(int) - picture).max() <= 1
    assert not [n for n in os.listdir(out) if "partial" in n or n.startswith(".tmp")]


def _weights(path):
    from nst_keras.engine import network

    return network.load_network(path).model.get_weights()


def test_ctrl_c_keeps_a_checkpoint_and_the_resumed_run_ends_on_the_straight_one(
        straight, photos, painting, tmp_path):
    from nst_keras import train

    def log(line):
        if line.startswith("step 3/"):
            os.kill(os.getpid(), signal.SIGINT)

    split = tmp_path / "split"
    with pytest.raises(Interrupted, match="--resume="):
        train.train(options(photos, split, steps=6), config(painting), log)
    run = split / "run"
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    with np.load(run / "checkpoint.npz") as ckpt:
        assert int(ckpt["step"]) == 3
    assert (split / "net.keras").exists()
    with pytest.raises(UserError, match="already holds a training run"):
        train.train(options(photos, split, steps=6), config(painting), quiet)
    with pytest.raises(UserError, match="--image_size=48 differs"):
        train.train(options(photos, split, steps=6, image_size=48, resume=str(run)),
                    config(painting), quiet)
    with kept_trainers() as made:  # the same settings: the trainer (its traced step) is reused
        record = train.train(options(photos, split, steps=6, resume=str(run)),
                             config(painting), quiet)
    assert record["status"] == "finished" and record["resumed_from"] == 3 and made == []
    out = straight[0]
    a, b = _weights(str(out / "net.keras")), _weights(str(split / "net.keras"))
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b)) < 1e-5
    first = [json.loads(l) for l in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    second = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in second] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in second] == pytest.approx([r["loss"] for r in first], rel=1e-5)
    with pytest.raises(UserError, match="already at step 6"):
        train.train(options(photos, split, steps=6, resume=str(run)), config(painting), quiet)


def _main(argv, capsys):
    from nst_keras.train.__main__ import main

    rc = main(["nst_keras.train", *argv])
    return rc, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("extra,message", [
    (["--batch_size=9"], "fewer than --batch_size=9"),
    (["--style_masks=m.png"], "--style_masks: a network is trained for one style"),
    (["--tile_size=512"], "--tile_size=512: training crops are small"),
    (["--image_size=30"], "--image_size=30 must be a multiple of 4"),
    (["--output=net.h5"], "--output=net.h5 must end in .keras"),
    (["--style_loss=nope"], "--style_loss='nope' is not known"),
])
def test_bad_training_input_is_one_line_and_writes_nothing(photos, painting, tmp_path, capsys,
                                                           extra, message):
    out = tmp_path / "run"
    argv = [f"--photos={photos}", f"--style_image={painting}", f"--output_dir={out}",
            f"--output={tmp_path / 'net.keras'}", "--weights=random", "--image_size=32",
            "--batch_size=2", *extra]
    rc, err = _main(argv, capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists() and not (tmp_path / "net.keras").exists()


def test_missing_folders_and_files_are_one_line(painting, tmp_path, capsys):
    rc, err = _main([f"--photos={tmp_path / 'none'}", f"--style_image={painting}",
                     f"--output_dir={tmp_path / 'run'}", f"--output={tmp_path / 'n.keras'}"],
                    capsys)
    assert rc == 2 and err == [f"error: --photos={tmp_path / 'none'} is not a folder; give a "
                               "folder of JPEG, PNG or WebP photos (e.g. COCO's train2014)"]
    rc, err = _main(["--resume=" + str(tmp_path)], capsys)
    assert rc == 2 and len(err) == 1 and "no training run.json" in err[0]


# -- using a network ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def network_file(tmp_path_factory):
    from nst_keras.engine import network

    path = tmp_path_factory.mktemp("net") / "painting.keras"
    network.build_network(0.125, seed=5).save(str(path))
    return str(path)


def test_run_with_a_network_writes_the_stylized_picture(network_file, image_dir, tmp_path,
                                                       capsys):
    from conftest import run_cli
    from nst_keras import load_network

    content = str(image_dir / "content.png")
    out = tmp_path / "out"
    assert run_cli(f"--network={network_file}", f"--content_image={content}",
                   f"--output_dir={out}", "--img_nrows=36") == 0
    written = np.asarray(Image.open(out / "content_stylized.png"))
    photo = np.asarray(Image.open(content).resize((48, 36), Image.NEAREST))
    assert written.shape == (36, 48, 3)
    assert np.abs(written.astype(int) - load_network(network_file)(photo)).max() <= 1
    capsys.readouterr()
    assert run_cli(f"--network={network_file}", f"--content_image={content}",
                   f"--output_dir={out}") == 2  # no overwriting without --overwrite
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert run_cli(f"--network={network_file}", f"--content_image={content}",
                   f"--output_dir={out}", "--preserve_colors=luminance", "--overwrite",
                   "--img_nrows=36") == 0
    kept = np.asarray(Image.open(out / "content_stylized.png"), np.float64)
    from nst_keras.engine import imaging

    # The photo's chroma (I, Q) is back; the luminance is the network's.
    assert np.abs(imaging.rgb_to_yiq(kept)[..., 1:] - imaging.rgb_to_yiq(photo)[..., 1:]).mean() \
        < 3.0


def test_a_network_file_opened_again_is_the_one_already_loaded(tmp_path):
    """``output.networks.open_network``: the same file (path, size, time) and
    precision give the network loaded before; a file written anew is read again."""
    from nst_keras.engine import network
    from nst_keras.output import networks

    path = str(tmp_path / "kept.keras")
    network.build_network(0.125, seed=5).save(path)
    first = networks.open_network(path)
    assert networks.open_network(path) is first
    assert networks.open_network(str(tmp_path / "." / "kept.keras")) is first  # the same file
    photo = make_picture(24, 28, 1)
    before = first(photo)
    network.build_network(0.125, seed=6).save(path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    second = networks.open_network(path)
    assert second is not first
    assert np.abs(second(photo).astype(int) - before).max() > 0  # the new file's weights
    with pytest.raises(UserError, match="does not exist"):
        networks.open_network(str(tmp_path / "none.keras"))


@pytest.mark.parametrize("make,message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b"junk"), "is not a Keras model file"),
])
def test_a_bad_network_file_is_one_line(tmp_path, image_dir, capsys, make, message):
    from conftest import run_cli

    path = tmp_path / "bad.keras"
    make(path)
    assert run_cli(f"--network={path}", f"--content_image={image_dir / 'content.png'}",
                   f"--output_dir={tmp_path / 'o'}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()


def test_a_keras_model_that_is_not_a_style_network_is_refused(tmp_path):
    import keras

    from nst_keras import load_network

    path = str(tmp_path / "other.keras")
    inp = keras.Input((None, None, 3))
    keras.Model(inp, keras.layers.Conv2D(3, 1)(inp)).save(path)
    with pytest.raises(UserError, match="not a style network"):
        load_network(path)


def test_a_batch_through_a_network(network_file, photos, tmp_path):
    from nst_keras import batch

    out = tmp_path / "batch"
    assert batch.main(["nst_keras.batch", f"--network={network_file}",
                       f"--content_image={photos}", f"--output_dir={out}",
                       "--img_nrows=32"]) == 1  # broken.jpg fails, the others go on
    names = sorted(n for n in os.listdir(out) if n.endswith(".png"))
    assert names == [f"p{i}_stylized.png" for i in range(5)]
    assert np.asarray(Image.open(out / "p0_stylized.png")).shape[0] == 32
    records = [json.loads(l) for l in (out / "batch.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in records) == ["failed"] + ["finished"] * 5
    assert batch.main(["nst_keras.batch", f"--network={network_file}",
                       f"--content_image={photos}", f"--output_dir={out}",
                       "--img_nrows=32"]) == 1
    records = [json.loads(l) for l in (out / "batch.jsonl").read_text().splitlines()][6:]
    assert sorted(r["status"] for r in records) == ["failed"] + ["skipped"] * 5


# -- export --------------------------------------------------------------------------------


def test_tflite_and_saved_model_give_the_networks_picture(network_file, tmp_path, capsys):
    import tensorflow as tf

    from nst_keras import export, load_network

    photos = np.stack([make_picture(40, 52, 1), make_picture(40, 52, 2)])
    model = load_network(network_file).model
    want = model(photos.astype(np.float32)).numpy()
    # float16 weights (the plain float32 flat buffer: test_paintings.py's export).
    lite = tmp_path / "net16.tflite"
    assert export.main(["export", f"--network={network_file}", f"--output={lite}",
                        "--quantize=float16"]) == 0
    interpreter = tf.lite.Interpreter(model_path=str(lite))
    halves = sum(int(np.prod(t["shape"])) for t in interpreter.get_tensor_details()
                 if t["dtype"] == np.float16)
    assert halves >= 0.9 * model.count_params()  # the weights are kept in half precision
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, photos.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, photos.astype(np.float32))
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert got.shape == want.shape and np.abs(got - want).max() <= 2.0
    folder = tmp_path / "saved"
    assert export.main(["export", f"--network={network_file}", f"--output={folder}",
                        "--format=saved_model"]) == 0
    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    got = serve(photo=tf.constant(photos, tf.float32))["stylized"].numpy()
    assert np.abs(got - want).max() <= 2.0
    capsys.readouterr()
    assert export.main(["export", f"--network={network_file}", f"--output={folder}",
                        "--format=saved_model"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert export.main(["export", f"--network={network_file}", f"--output={tmp_path / 'x'}",
                        "--format=saved_model", "--quantize=int8"]) == 2
    assert "applies to --format=tflite only" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


# -- two devices -----------------------------------------------------------------------------

def test_two_cpu_devices_train_as_one(straight, photos, painting, tmp_path):
    """The straight run again on the two logical CPU devices the suite sets up
    (tests/conftest.py): the same losses, the same network."""
    from nst_keras import load_network, train

    record = train.train(options(photos, tmp_path, **STRAIGHT),
                         config(painting, devices="CPU:0,CPU:1"), quiet)
    assert record["replicas"] == 2 and record["status"] == "finished", record
    one, two = (out / "run" / "metrics.jsonl" for out in (straight[0], tmp_path))
    one, two = ([json.loads(l)["loss"] for l in f.read_text().splitlines()] for f in (one, two))
    assert len(two) == STRAIGHT["steps"] and np.allclose(one, two, rtol=1e-4), (one, two)
    # The pictures, not the weights: Adam moves the biases before each instance
    # normalisation by its full step on gradients that are rounding noise, and
    # the normalisation takes them out again.
    batch = np.stack([make_picture(32, 32, i) for i in range(4)]).astype(np.float32)
    p1, p2 = (load_network(str(out / "net.keras")).model(batch).numpy()
              for out in (straight[0], tmp_path))
    worst = float(np.abs(p1 - p2).max())
    assert worst < 0.5, worst


def test_a_trainer_is_reused_only_for_the_same_settings_and_pictures(photos, painting, tmp_path):
    from nst_keras.train import _reuse_key, training_config

    def key_of(opts, cfg, *rest):  # as the run builds it: from the training's Config
        return _reuse_key(opts, training_config(cfg, opts), *rest)

    pictures = [np.zeros((4, 4, 3), np.float32), np.ones((4, 5, 3), np.float32)]
    key = key_of(options(photos, tmp_path), config(painting), "float32", pictures)
    same = [options(photos, tmp_path / "other", steps=50, log_every=7), config(painting),
            "float32", [p.copy() for p in pictures]]
    assert key_of(*same) == key  # the length, the folder and the logging do not count
    changed = [(options(photos, tmp_path, learning_rate=1e-2), config(painting), "float32",
                pictures),
               (options(photos, tmp_path), config(painting, style_weight=3.0), "float32",
                pictures),
               (options(photos, tmp_path), config(painting), "mixed_bfloat16", pictures),
               (options(photos, tmp_path), config(painting), "float32",
                [pictures[0], pictures[1] + 1])]
    assert all(key_of(*args) != key for args in changed)
    assert key_of(*same, ("CPU:0,CPU:1", "mirrored")) != key  # the same network elsewhere
    weights = tmp_path / "vgg.weights.h5"
    weights.write_bytes(b"one")
    with_file = [options(photos, tmp_path), config(painting, weights=str(weights)), "float32",
                 pictures]
    first = key_of(*with_file)
    weights.write_bytes(b"other")  # the same path, another file
    assert key_of(*with_file) != first


def test_the_fused_adam_steps_as_keras_adam_on_the_same_variables():
    """``FusedAdam`` (one ApplyAdam kernel per variable) against Keras' Adam: the
    same weights after a few steps, and the same optimiser variables (so the
    checkpoints hold the same arrays)."""
    import keras
    import tensorflow as tf

    from nst_keras.engine.training import FusedAdam

    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(5,)).astype(np.float32)]
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in start] for _ in range(4)]
    ends = []
    for make in (keras.optimizers.Adam, FusedAdam):
        weights = [keras.Variable(w) for w in start]
        optimizer = make(learning_rate=0.1)
        step = tf.function(lambda g: optimizer.apply_gradients(zip(g, weights)), autograph=False)
        for g in grads:
            step([tf.constant(x) for x in g])
        ends.append(([w.numpy() for w in weights], [v.numpy() for v in optimizer.variables]))
    (w1, v1), (w2, v2) = ends
    assert np.abs(w1[0] - start[0]).max() > 0.1  # they moved
    for a, b in zip(w1 + v1, w2 + v2):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

"""Batch stylisation: folders and globs, bad items, re-runs that skip and resume,
interrupts, and the Ray workers (local, a killed worker, two nodes, a film's
chunks on the same two-node cluster)."""

import importlib.util
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture
from nst_keras import batch, pool
from nst_keras.output import checkpoint

FAST = ["--weights=random", "--seed=3", "--img_nrows=48", "--log_every=1", "--save_every=0",
        "--content_layers=block2_conv2", "--style_layers=block1_conv1,block2_conv1"]
RAY_MISSING_REASON = "Ray is not installed (pip install 'nst_keras[ray]')"


def lines(out):
    with open(os.path.join(out, batch.BATCH_LOG)) as f:
        return [json.loads(line) for line in f]


def png(out, item):
    name = [n for n in os.listdir(os.path.join(out, item)) if n.endswith("_stylized.png")]
    with open(os.path.join(out, item, name[0]), "rb") as f:
        return f.read()


def config_of(out, *extra):
    """The ``Config`` the batch's flags give (inputs are passed separately)."""
    from nst_keras import cli

    cli.parse(["prog", "--content_image=x", "--style_image=y", f"--output_dir={out}",
               *FAST, *extra], batch.FLAGS)
    return cli.config_from_flags(batch.FLAGS)


def run_batch(*args):
    return batch.main(["nst_keras.batch", *args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three content pictures, a text file named .jpg, a note, and a style."""
    d = tmp_path_factory.mktemp("batch")
    photos = d / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(make_picture(48, 64, i)).save(photos / f"p{i}.png")
    (photos / "broken.jpg").write_text("this is not a picture")
    (photos / "notes.txt").write_text("not an image extension: ignored")
    Image.fromarray(make_picture(40, 56, 7)).save(d / "wave.png")
    return d


def flags(folder, out, *extra, content=None):
    return [f"--content_image={content or folder / 'photos'}",
            f"--style_image={folder / 'wave.png'}", f"--output_dir={out}", *FAST, *extra]


# --------------------------------------------------------------------------
# Items


def test_items_from_files_folders_globs_and_zip(folder):
    photos = folder / "photos"
    items = batch.make_items(f"{photos},{photos}/p1.*", str(folder / "wave.png"))
    assert [i.name for i in items] == ["broken__wave", "p0__wave", "p1__wave", "p2__wave",
                                       "p1__wave_2"]
    zipped = batch.make_items([str(photos / "p0.png"), str(photos / "p1.png")],
                              [str(folder / "wave.png"), str(photos / "p2.png")], "zip")
    assert [i.name for i in zipped] == ["p0__wave", "p1__p2"]
    with pytest.raises(batch.UserError, match="as many content as style"):
        batch.make_items(str(photos), str(folder / "wave.png"), "zip")
    with pytest.raises(batch.UserError, match="holds no image"):
        batch.make_items(str(folder / "*.gif"), str(folder / "wave.png"))


def test_a_photo_with_its_own_mask_uses_it_and_the_others_take_style_masks(tmp_path):
    import numpy as np

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(make_picture(48, 64, i)).save(photos / f"p{i}.png")
    left = np.zeros((48, 64), np.uint8)
    left[:, :32] = 255
    Image.fromarray(left).save(photos / "p0.mask1.png")  # p0's own mask
    everywhere = tmp_path / "all.png"
    Image.fromarray(np.full((48, 64), 255, np.uint8)).save(everywhere)
    Image.fromarray(make_picture(40, 56, 7)).save(tmp_path / "wave.png")
    items = batch.make_items(str(photos), str(tmp_path / "wave.png"))
    assert [(i.name, i.masks) for i in items] == [
        ("p0__wave", (str(photos / "p0.mask1.png"),)), ("p1__wave", None)]  # no mask item
    out = tmp_path / "out"
    assert run_batch(f"--content_image={photos}", f"--style_image={tmp_path / 'wave.png'}",
                     f"--output_dir={out}", f"--style_masks={everywhere}", "--iterations=2",
                     *FAST) == 0
    masks = {item: json.load(open(out / item / "run.json"))["flags"]["style_masks"]
             for item in ("p0__wave", "p1__wave")}
    assert masks == {"p0__wave": [str(photos / "p0.mask1.png")],
                     "p1__wave": [str(everywhere)]}


def test_bad_input_is_one_line_exit_2_and_writes_nothing(folder, tmp_path, capsys,
                                                         monkeypatch):
    out = tmp_path / "out"
    assert run_batch(*flags(folder, out, content=folder / "missing")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "does not exist" in err
    assert run_batch(*flags(folder, out, "--iterations=0")) == 2
    assert "--iterations" in capsys.readouterr().err
    for bad, message in [("--max_retries=-1", "--max_retries=-1 must be 0 or more"),
                         ("--workers=-2", "--workers=-2 must be 0 or more"),
                         ("--pairing=all", "--pairing='all' is not known")]:
        assert run_batch(*flags(folder, out, bad)) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (bad, err)
    if importlib.util.find_spec("ray") is not None:  # nobody listens on port 1
        assert run_batch(*flags(folder, out, "--ray_address=127.0.0.1:1")) == 2
        assert "cannot reach the Ray cluster" in capsys.readouterr().err
    monkeypatch.setattr(pool.importlib.util, "find_spec", lambda name: None)
    assert run_batch(*flags(folder, out, "--workers=2")) == 2
    assert "pip install" in capsys.readouterr().err
    assert not out.exists()


def test_exit_statuses_are_the_commands_own(folder, tmp_path, capsys, monkeypatch):
    """The batch turns errors into exit statuses as every command does (``cli.exit_status``):
    Ctrl-C while planning is one ``stopped:`` line and 130."""
    calls = []
    exit_status = batch.cli.exit_status
    monkeypatch.setattr(batch.cli, "exit_status",
                        lambda body, interrupted: calls.append(1) or exit_status(body, interrupted))

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "_batch_from_flags", interrupted)
    assert run_batch(*flags(folder, tmp_path / "out")) == 130
    err = capsys.readouterr().err.strip()
    assert calls == [1] and err.count("\n") == 0
    assert err.startswith("stopped: interrupted; finished items are kept")


# --------------------------------------------------------------------------
# In this process


# Adam (its moments are checkpointed too) with a checkpoint every 4 steps: the
# interrupted batch and the Ray runs below must end on these same images.
STEPS = 24
SERIAL = ["--optimizer=adam", f"--iterations={STEPS}", "--style_weight=1e-4", "--save_every=4"]


@pytest.fixture(scope="module")
def serial_run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "out"
    status = run_batch(*flags(folder, out, *SERIAL))
    return out, status


def test_a_bad_file_fails_alone_and_a_rerun_skips_the_finished(folder, serial_run, capsys):
    out, status = serial_run
    assert status == 1
    first = lines(out)
    by_status = {r["item"]: r["status"] for r in first}
    assert by_status == {"broken__wave": "failed", "p0__wave": "finished",
                         "p1__wave": "finished", "p2__wave": "finished"}
    broken = next(r for r in first if r["item"] == "broken__wave")
    assert "broken.jpg" in broken["reason"] and "\n" not in broken["reason"]
    done = [r for r in first if r["status"] == "finished"]
    assert all(r["steps"] == STEPS and r["final_losses"]["loss"] > 0 for r in done)
    assert [r["targets_cached"] for r in done] == [False, True, True]  # one style
    metrics = {r["item"]: open(os.path.join(out, r["item"], "metrics.jsonl")).read()
               for r in done}

    capsys.readouterr()
    assert run_batch(*flags(folder, out, *SERIAL)) == 1
    printed = capsys.readouterr().out.strip().splitlines()
    assert "0 finished, 1 failed, 3 skipped of 4 items" in printed[-1]
    progress = [line for line in printed if line.startswith("[")]
    assert [line.split(" ")[:2] for line in progress] == [
        ["[#####...............]", "1/4"], ["[##########..........]", "2/4"],
        ["[###############.....]", "3/4"], ["[####################]", "4/4"]]
    assert all("ETA" in line for line in progress)
    again = lines(out)[len(first):]
    assert sorted(r["status"] for r in again) == ["failed", "skipped", "skipped", "skipped"]
    for item, text in metrics.items():  # no step was run again
        assert open(os.path.join(out, item, "metrics.jsonl")).read() == text


def test_an_interrupted_batch_resumes_to_the_same_images(folder, serial_run, tmp_path,
                                                        monkeypatch):
    """A real SIGINT in the middle of the second item: exit 130, the first item kept, the
    second checkpointed; the same command again skips the first, resumes the second
    (Adam's moments too; SGD's resume: test_rundir.py) and ends on the serial run's
    uninterrupted images."""
    from nst_keras.engine.callbacks import Callback

    photos = folder / "photos"
    content = f"{photos / 'p0.png'},{photos / 'p1.png'}"
    stop_at = 5  # between two of the run's own checkpoints (every 4 steps)
    signalled = []

    class SigintAtStep(Callback):
        def __init__(self, item):
            self.item = item

        def on_step(self, progress):
            if self.item == "p1__wave" and progress.step == stop_at and not signalled:
                signalled.append(progress.step)
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C in the terminal

    real_stylize = batch._stylize

    def stylize(config, cache, record, callbacks=()):
        item = os.path.basename(config.output_dir)
        return real_stylize(config, cache, record, [*callbacks, SigintAtStep(item)])

    monkeypatch.setattr(batch, "_stylize", stylize)
    stopped = tmp_path / "stopped"
    assert run_batch(*flags(folder, stopped, *SERIAL, content=content)) == 130
    assert signalled == [stop_at]
    first = lines(stopped)
    assert [(r["status"], r["steps"]) for r in first] == [("finished", STEPS),
                                                         ("interrupted", stop_at)]
    assert checkpoint.load(str(stopped / "p1__wave")).step == stop_at
    assert not list((stopped / "p1__wave").glob("*_stylized.png"))
    assert run_batch(*flags(folder, stopped, *SERIAL, content=content)) == 0
    resumed = lines(stopped)[2:]
    assert [r["status"] for r in resumed] == ["skipped", "finished"]
    assert (resumed[1]["resumed_from"], resumed[1]["steps"]) == (stop_at, STEPS)

    serial_out, _ = serial_run  # the same flags, never interrupted
    for item in ("p0__wave", "p1__wave"):
        assert png(stopped, item) == png(serial_out, item)


def test_ctrl_c_while_an_item_is_set_up_records_it_and_a_rerun_makes_it(folder, tmp_path,
                                                                        monkeypatch, capsys):
    from nst_keras.engine import pipeline

    photos = folder / "photos"
    content = f"{photos / 'p0.png'},{photos / 'p1.png'}"
    out = tmp_path / "out"
    stylize, calls = pipeline.stylize, []

    def interrupted_at_the_second_item(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C lands before the first step
        return stylize(*args, **kwargs)

    monkeypatch.setattr(pipeline, "stylize", interrupted_at_the_second_item)
    assert run_batch(*flags(folder, out, "--iterations=2", content=content)) == 130
    assert "1 finished, 0 failed, 0 skipped of 2 items, 1 not done" in capsys.readouterr().out
    first = lines(out)
    assert [(r["item"], r["status"], r["steps"]) for r in first] == [
        ("p0__wave", "finished", 2), ("p1__wave", "interrupted", 0)]
    assert run_batch(*flags(folder, out, "--iterations=2", content=content)) == 0
    assert [(r["item"], r["status"]) for r in lines(out)[2:]] == [
        ("p0__wave", "skipped"), ("p1__wave", "finished")]


# --------------------------------------------------------------------------
# Ray


@pytest.fixture
def ray_module():
    ray = pytest.importorskip("ray", reason=RAY_MISSING_REASON)
    yield ray
    ray.shutdown()


def test_worker_plans_for_gpus_cpus_and_nodes(ray_module):
    gpus = pool.plan({"CPU": 16.0, "GPU": 4.0}, nodes=2, workers=0)
    assert gpus == [{"options": {"num_gpus": 1, "num_cpus": 1.0}, "threads": 0}] * 4
    cpus = pool.plan({"CPU": 2.0}, nodes=1, workers=2)
    assert cpus == [{"options": {"num_cpus": 1.0}, "threads": 1}] * 2
    nodes = pool.plan({"CPU": 24.0}, nodes=3, workers=0)  # one per node
    assert nodes == [{"options": {"num_cpus": 8.0}, "threads": 8}] * 3


RAY_DEADLINE_S = 240  # a batch on the cluster that runs longer is stopped and fails


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of two nodes on 127.0.0.1 (one CPU each), shared by the tests
    below; each batch joins it with ``--ray_address`` and leaves it when it ends."""
    ray = pytest.importorskip("ray", reason=RAY_MISSING_REASON)
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    node = dict(num_cpus=1, object_store_memory=100 * 1024 * 1024,
                node_ip_address="127.0.0.1", include_dashboard=False)
    with pytest.MonkeyPatch.context() as patch:
        # Keep the driver on the loopback address too (Ray would otherwise dial
        # this machine's network address, which may be closed).
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        # Ray kills the largest worker when the whole machine's memory use passes
        # 95%; on a busy machine other processes can get it there, and these small
        # workers are not what the tests are about.
        patch.setenv("RAY_memory_monitor_refresh_ms", "0")
        made = Cluster(initialize_head=True, head_node_args=node)
        try:
            made.add_node(**{**node, "resources": {"second_node": 1}})
            yield made
        finally:
            ray.shutdown()
            made.shutdown()


@pytest.fixture(scope="module")
def killed_run(cluster, folder, tmp_path_factory):
    """The three photos on the cluster's two workers (one per node); one worker is
    SIGKILLed while both are past a checkpoint of their item.  Returns the records,
    the killed pid, the output folder, whether Ray was still initialised after
    the batch (it joined the cluster itself, so it must have left it) and the
    labels of the workers that started (``host:pid/node``)."""
    import ray

    out, pids, killed, ended = tmp_path_factory.mktemp("killed") / "out", [], [], \
        threading.Event()
    labels = []

    def log(text):
        if text.startswith("ray worker"):
            labels.append(text.split()[2])
            pids.append(int(text.split("(pid ")[1].split(")")[0]))

    def busy_past_a_checkpoint():
        """Items running (no final image yet) that have saved a checkpoint."""
        found = out.glob("*/metrics.jsonl") if out.exists() else []
        return [m.parent.name for m in found if os.path.isfile(checkpoint.path_in(m.parent))
                and not list(m.parent.glob("*_stylized.png"))]

    def killer():
        """Kills a worker once both workers' items are past step 4; stops a batch
        that has not ended by the deadline (Ctrl-C: the batch leaves Ray)."""
        deadline = time.time() + RAY_DEADLINE_S  # two TensorFlows start first
        while not ended.wait(0.02):
            if time.time() > deadline:
                timed_out.append(1)
                os.kill(os.getpid(), signal.SIGINT)
                return
            if not killed and len(pids) == 2 and len(busy_past_a_checkpoint()) == 2:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    config = config_of(out, *SERIAL)
    timed_out, records = [], []
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        records = list(batch.stylize_many(
            config, str(folder / "photos/p*.png"), str(folder / "wave.png"),
            batch.BatchOptions(ray_address=cluster.address), log=log))
    except KeyboardInterrupt:
        if not timed_out:
            raise
    finally:
        ended.set()
        thread.join()
    if timed_out:
        pytest.fail(f"the batch on the cluster did not end in {RAY_DEADLINE_S} s")
    return records, killed, out, ray.is_initialized(), labels


def test_a_killed_worker_has_its_item_finished_elsewhere(killed_run, serial_run):
    """Each item is finished once, the killed one from its checkpoint by the
    worker that was already running (not by the replacement, which is still
    starting TensorFlow), and every picture is the serial run's."""
    records, killed, out, still_connected, labels = killed_run
    assert killed, "no worker was killed"
    names = sorted(r["item"] for r in records)
    assert names == ["p0__wave", "p1__wave", "p2__wave"]  # each item once
    assert all(r["status"] == "finished" and r["steps"] == STEPS for r in records)
    assert max(r["attempts"] for r in records) == 2
    retried = next(r for r in records if r["attempts"] == 2)
    assert retried["resumed_from"] >= 4  # from its checkpoint, not from scratch
    survivor = [label for label in labels if f":{killed[0]}/" not in label]
    assert retried["worker"] in survivor and len(survivor) == 1
    serial_out, _ = serial_run
    for item in names:  # the same pictures as in this process, the retried one too
        assert png(out, item) == png(serial_out, item)
    assert not still_connected  # the connection the batch made is closed


def test_items_run_on_both_nodes_of_a_two_node_cluster(killed_run, cluster):
    """``--ray_address`` without ``--workers``: one worker per node, and both ran
    an item at once (the kill waits for two items past a checkpoint)."""
    records, killed, _, still_connected, labels = killed_run
    assert sorted(r["status"] for r in records) == ["finished"] * 3
    nodes = {label.rsplit("/", 1)[1] for label in labels}
    assert len(labels) == 2 and len(nodes) == 2
    assert {n[:8] for n in nodes} == {n.node_id[:8] for n in cluster.list_all_nodes()}
    assert {r["node"][:8] for r in records} <= nodes
    assert not still_connected


def test_workers_that_cannot_be_placed_end_the_batch_in_one_line(cluster, monkeypatch):
    """Each worker asks for a resource no node has: a ``UserError`` after the start
    wait (shortened here) instead of waiting forever, and the connection is closed."""
    import ray

    from nst_keras.errors import UserError

    monkeypatch.setattr(pool, "START_WAIT_S", 1.0)
    monkeypatch.setattr(pool, "plan_workers", lambda workers: [
        {"options": {"num_cpus": 1.0, "resources": {"no_such_node": 1}}, "threads": 1}])
    with pytest.raises(UserError, match=r"1 of 1 Ray worker\(s\) did not start within 1 s "
                                        r".*no_such_node.*lower --workers or add nodes"):
        list(pool.run(batch.run_item, ["an item"], address=cluster.address, log=lambda s: None))
    assert not ray.is_initialized()


def test_a_films_chunks_on_two_workers_are_blended_to_the_right_length(cluster, tmp_path):
    """``nst_keras.video --workers=2`` on the cluster: one chunk per worker, an
    overlap frame the cross-fade of both chunks' versions, and the connection the
    film made closed."""
    import ray

    pytest.importorskip("cv2", reason="pip install 'nst_keras[video]'")
    pytest.importorskip("imageio_ffmpeg", reason="pip install 'nst_keras[video]'")
    from test_video import make_clips, run_video
    from nst_keras.engine.imaging import load_image
    from nst_keras.video import film, videoio

    clips = make_clips(tmp_path)
    out = tmp_path / "ray.mp4"
    status = run_video(clips, out, "--img_nrows=32", "--workers=2", "--chunk_overlap=2",
                       f"--ray_address={cluster.address}")
    assert status == 0 and not ray.is_initialized()
    frames = tmp_path / "ray_frames"
    first, second = (sorted(os.listdir(frames / n)) for n in ("chunk_00", "chunk_01"))
    assert first == [f"frame_{i:06d}.png" for i in range(4)]
    assert second == [f"frame_{i:06d}.png" for i in range(2, 6)]
    assert videoio.probe(str(out)).frames == 6
    # An overlap frame is the cross-fade of both chunks' versions of it.
    blended = list(film.film_frames(str(frames), film.Film(
        tuple(range(6)), 32, 42, 8.0, 0.0, True, film.plan_chunks(6, 2, 2))))
    a, b = (load_image(str(frames / n / "frame_000002.png")).astype(float)
            for n in ("chunk_00", "chunk_01"))
    assert np.abs(a - b).max() > 2  # each chunk made its own version of the shared frame
    assert np.abs(blended[2] - (2 * a + b) / 3).max() <= 0.5 + 1e-6
    assert len(blended) == 6

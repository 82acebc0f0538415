"""Shared fixtures and helpers: tiny images made here, random (seeded) VGG weights,
the command lines and settings several test files use."""

import contextlib
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# --precision=auto (the default) answers float32 in the tests, whatever this
# machine's fastest precision is, so numbers compare across machines;
# tests/test_hardware.py unpins it to test auto itself.
os.environ["NST_KERAS_PRECISION"] = "float32"

import numpy as np
import pytest
from PIL import Image


def pytest_configure(config):
    """Sets TensorFlow up before its first operation in each process that runs
    tests (each pytest-xdist worker, or the one process with ``-n 0``; not the
    xdist controller, which runs none):

    - two logical CPU devices, so the two-device checks (``--devices=CPU:0,CPU:1``)
      run in this process; nothing else uses the second one (``--devices`` is
      empty by default);
    - with the suite split over several processes, one intra-op and one
      inter-op thread per worker: two processes of two threads each on two cores
      would contend for them.  The processes the tests start (subprocesses,
      the notebooks' kernel, Ray workers) keep the defaults: they mostly start
      up, which one thread makes no faster."""
    worker = getattr(config, "workerinput", None)
    if worker is None and (config.getoption("numprocesses", default=None) or 0):
        return  # the xdist controller
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    if (worker or {}).get("workercount", 1) >= 2:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.constant(0.0) + 1.0  # the devices and pools are made now, so nothing later resizes them


def make_picture(rows, cols, seed=0):
    """A smooth colourful test picture with some structure (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(x / (3 + seed) + y / 7),
            128 + 100 * np.cos(y / (4 + seed)),
            128 + 100 * np.sin((x + y) / (5 + seed)),
        ],
        axis=-1,
    )
    base += rng.normal(0, 10, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


ROWS, COLS = 48, 64  # size of the in-memory test pictures


@pytest.fixture(scope="module")
def backbone():
    """VGG19 with seeded random weights."""
    from nst_keras.engine.vgg import load_backbone

    return load_backbone("vgg19", "random", seed=3)[0]


@pytest.fixture(scope="module")
def pictures():
    """A content and a style picture, ROWS x COLS."""
    return make_picture(ROWS, COLS, 0), make_picture(ROWS, COLS, 1)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    Image.fromarray(make_picture(48, 64, 0)).save(d / "content.png")
    Image.fromarray(make_picture(40, 56, 1)).save(d / "style.png")
    Image.fromarray(make_picture(52, 44, 2)).save(d / "style2.png")
    return d


@pytest.fixture
def content_path(image_dir):
    return str(image_dir / "content.png")


@pytest.fixture
def style_path(image_dir):
    return str(image_dir / "style.png")


@pytest.fixture
def style2_path(image_dir):
    return str(image_dir / "style2.png")


# The objective builder's old keyword names -> Config fields (tests build objectives
# from network images with a few settings; ``objective_of``).
_FIELD_OF = {"normalization": "loss_normalization", "blend_weights": "style_blend_weights",
             "layer_weights": "style_layer_weights"}


def objective_of(extractor, content, styles, *, tile_size=0, halo=32, style_masks=None,
                 target_cache=None, network_key=None, extra_terms=(), jit_compile=False,
                 strategy=None, **fields):
    """``engine.build.build_objective`` for network images ``content`` and ``styles``
    with a ``Config`` of ``fields`` (``content_layers``, ``normalization``, ...)."""
    from nst_keras.engine import build
    from nst_keras.engine.terms import Pictures
    from nst_keras.settings import Config

    values = {_FIELD_OF.get(k, k): (tuple(v) if isinstance(v, list) else v)
              for k, v in fields.items()}
    values.setdefault("content_layers", ())
    values.setdefault("style_layers", ())
    config = Config(content_image="c", style_image="s", jit_compile=jit_compile, **values)
    styles = [styles] if isinstance(styles, np.ndarray) and styles.ndim == 4 else styles
    pictures = Pictures(content, styles, style_masks)
    return build.build_objective(config, extractor, pictures, tile_size=tile_size, halo=halo,
                                 strategy=strategy, target_cache=target_cache,
                                 network_key=network_key, extra_terms=extra_terms)


@contextlib.contextmanager
def kept_trainers():
    """The ``engine.training.Trainer``s built inside, in a list."""
    from nst_keras.engine import training

    made = []

    class Kept(training.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "Trainer", Kept)
        yield made


def run_cli(*args):
    """Runs the command line in this process; returns its exit status."""
    from nst_keras import run

    return run.main(["nst_keras.run", *args])


def config_for(*argv):
    """The validated ``Config`` the command line builds from ``argv``."""
    from nst_keras import cli

    cli.parse(["prog", *argv])
    return cli.config_from_flags()


# -- shared by several test files ----------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMAGENET = (103.939, 116.779, 123.68)  # the ImageNet means (BGR), written out here

# Shallow layers keep the network (and the tests) small.
FAST = dict(weights="random", seed=3, img_nrows=48, log_every=1, save_every=0,
            content_layers=("block2_conv2",), style_layers=("block1_conv1", "block2_conv1"))
QUIET = dict(log=lambda s: None)


def metrics(out):
    """The records of ``out``/metrics.jsonl."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def base_args(content_path, style_path, out, *extra):
    """Command line: random weights, 48 rows, default layers and logging."""
    return [
        f"--content_image={content_path}",
        f"--style_image={style_path}",
        f"--output_dir={out}",
        "--weights=random",
        "--img_nrows=48",
        *extra,
    ]


def fast_flags(content, style, out, *extra):
    """Command line matching ``FAST``: seed 3, shallow layers, log every step."""
    return [f"--content_image={content}", f"--style_image={style}", f"--output_dir={out}",
            "--weights=random", "--seed=3", "--img_nrows=48", "--log_every=1",
            "--save_every=0", "--content_layers=block2_conv2",
            "--style_layers=block1_conv1,block2_conv1", *extra]


def flags_for(content, style, out, *extra):
    """Command line for runs that are stopped, resumed or compared image for image
    (shallow layers: a stop and a resume need no deep network to be tested)."""
    return [f"--content_image={content}", f"--style_image={style}", f"--output_dir={out}",
            "--weights=random", "--img_nrows=48", "--log_every=1", "--save_every=0",
            "--style_weight=1e-4", "--content_layers=block2_conv2",
            "--style_layers=block1_conv1,block2_conv1", *extra]


def tiny(content_path, style_path, out, *extra):
    """Command line for the experiments: L-BFGS, no snapshots, no log."""
    return [f"--content_image={content_path}", f"--style_image={style_path}",
            f"--output_dir={out}", "--weights=random", "--img_nrows=48",
            "--optimizer=lbfgs", "--save_every=0", "--log_every=0", *extra]


# -- the slowest tests, in one place -------------------------------------------
# Ray runtimes, the browser, the notebooks, whole programs in subprocesses and
# the longest engine checks:
# ``python -m pytest -m "not slow" tests`` is the quick loop; the README's
# command (and CI) runs everything.
SLOW = (
    "test_batch.py::test_a_killed_worker_has_its_item_finished_elsewhere",
    "test_batch.py::test_items_run_on_both_nodes_of_a_two_node_cluster",
    "test_batch.py::test_workers_that_cannot_be_placed_end_the_batch_in_one_line",
    "test_batch.py::test_an_interrupted_batch_resumes_to_the_same_images",
    "test_batch.py::test_a_films_chunks_on_two_workers_are_blended_to_the_right_length",
    "test_browser.py::test_the_page_in_a_real_browser",
    "test_browser.py::test_painting_a_region_in_the_browser_sends_the_masks",
    "test_browser.py::test_the_camera_live_in_a_real_browser",
    "test_app_security.py::test_a_short_soak_leaves_nothing_behind",
    "test_app_security.py::test_the_page_shows_the_queue_full_and_too_large_lines",
    "test_notebooks.py::test_the_notebooks_execute_top_to_bottom",
    "test_end_to_end.py::test_real_sigint_to_the_program",
    "test_bad_input.py::test_subprocess_error_is_a_single_stderr_line",
    "test_tiling.py::test_two_workers_give_the_first_step_loss_of_one_process",
    "test_tiling.py::test_two_cpu_devices_give_the_one_device_loss_and_gradient",
    "test_hardware.py::test_threads_are_set_before_tensorflow_starts_and_kept_after",
    "test_presets.py::test_a_plain_install_runs_a_preset_from_another_folder",
    # the longest engine checks (several backbones, half precision, weight files)
    "test_objective.py::test_scaled_gradient_magnitudes_stay_in_band_across_sizes_and_backbones",
    "test_objective.py::test_scaled_optimum_invariant_to_rescaling_one_layer",
    "test_tiling.py::test_tiling_adds_little_to_the_error_of_half_precision",
    "test_vgg.py::test_weights_file_loads_and_changes_the_loss",
    "test_quality_benchmark.py::test_quality_benchmark_tiny_end_to_end",
    "test_tiling.py::test_a_tiled_multi_scale_run_resumes_bit_for_bit",
    "test_tiling.py::test_lbfgs_on_the_tiled_objective_takes_the_untiled_path",
    "test_distributions.py::test_a_masked_two_style_run_gives_each_half_its_own_palette",
    "test_distributions.py::test_resume_is_bit_for_bit_with_each_loss",
    # the longest training checks (two devices, export, resume, several paintings)
    "test_train.py::test_two_cpu_devices_train_as_one",
    "test_train.py::test_tflite_and_saved_model_give_the_networks_picture",
    "test_train.py::test_ctrl_c_keeps_a_checkpoint_and_the_resumed_run_ends_on_the_straight_one",
    "test_paintings.py::test_training_with_stability_reports_the_term_and_adds_it_to_the_loss",
    "test_paintings.py::test_a_run_from_before_the_stability_settings_resumes",
    "test_paintings.py::test_the_exported_files_keep_the_blend_as_an_input",
    "test_paintings.py::test_run_and_batch_take_the_blend",
    "test_train.py::test_a_batch_through_a_network",
    # films through a network (decoded and encoded with ffmpeg), the halo sweep
    "test_network_film.py::test_part_of_the_film_smaller_and_blended",
    "test_network_film.py::test_the_film_keeps_count_rate_size_and_audio_and_is_the_networks",
    "test_network_film.py::test_a_film_with_the_previous_frame_carried",
    "test_tiling.py::test_a_smaller_halo_gives_errors_that_grow",
    "test_distributions.py::test_lbfgs_runs_every_iteration_of_a_sliced_run_and_lowers_its_loss",
)


# The files that take longest, run first: with the suite split by file over two
# processes (pyproject.toml's addopts), the small files at the end fill the gaps.
LONGEST_FIRST = ("test_tiling.py", "test_batch.py", "test_distributions.py", "test_video.py",
                 "test_objective.py", "test_notebooks.py", "test_app_security.py",
                 "test_train.py", "test_paintings.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        where = f"{os.path.basename(item.path)}::{item.originalname}"
        if where in SLOW:
            item.add_marker(pytest.mark.slow)

    def rank(item):
        name = os.path.basename(item.path)
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's own order is kept


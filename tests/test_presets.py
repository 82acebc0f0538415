"""The shipped presets: ``--preset=NAME`` in every command, the files in the
package (``configs/`` is the same folder), the web page's presets read from
them, and a plain ``pip install`` that runs a preset from another folder."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from absl import flags as absl_flags
from PIL import Image

from conftest import REPO, config_for, make_picture
from nst_keras import batch, cli, run, settings, video
from nst_keras.app import forms
from nst_keras.errors import UserError

# The presets the README and docs/guide.md name.
DOCUMENTED = {"default", "fast", "keep_colors", "two_styles", "high_res", "deprocess_offsets",
              "reconstruct_content", "reconstruct_style", "tradeoff", "network_fast",
              "network_johnson"}


def read_preset(name: str) -> dict:
    """``{flag name: text value}`` of preset ``name`` (with the presets it reads),
    as ``cli.expand_presets`` reads it in: a boolean flag given alone reads
    ``"true"`` (``--noNAME``: ``"false"``)."""
    values = {}
    for arg in cli.expand_presets(["prog", f"--preset={name}"], absl_flags.FlagValues())[1:]:
        key, eq, text = arg.lstrip("-").partition("=")
        if not eq:
            negated = key.startswith("no") and key not in settings.FIELDS
            key, text = (key[2:], "false") if negated else (key, "true")
        values[key] = text
    return values


@pytest.fixture(autouse=True)
def fresh_flags():
    yield
    cli.parse(["prog"])  # no preset's values leak into the next test


def test_the_documented_presets_ship():
    assert set(cli.preset_names()) == DOCUMENTED
    assert cli.preset_path("fast") == os.path.join(cli.PRESETS_DIR, "fast.cfg")
    assert os.path.dirname(cli.PRESETS_DIR) == os.path.dirname(os.path.abspath(cli.__file__))


def test_preset_reads_the_same_config_as_its_flagfile(content_path, style_path):
    images = (f"--content_image={content_path}", f"--style_image={style_path}")
    by_file = config_for(f"--flagfile={os.path.join(cli.PRESETS_DIR, 'fast.cfg')}", *images)
    assert config_for("--preset=fast", *images) == by_file
    assert config_for("--preset", "fast", *images) == by_file
    assert (by_file.optimizer, by_file.iterations, by_file.loss_normalization,
            by_file.style_weight, by_file.pooling, by_file.color_weight,
            by_file.color_loss) == ("lbfgs", 50, "gap_total", 200.0, "avg", 50.0, "gaussian")
    assert by_file != config_for(*images)  # the preset changes settings


def test_flags_are_read_left_to_right_around_a_preset():
    assert config_for("--preset=fast", "--iterations=7").iterations == 7
    assert config_for("--iterations=7", "--preset=fast").iterations == 50
    # A preset that reads another (high_res reads default) keeps the order too.
    c = config_for("--content_weight=3", "--preset=high_res", "--optimizer=lbfgs")
    assert (c.content_weight, c.optimizer, c.scales) == (2.5e-8, "lbfgs", (512, 1024, 2048))
    c = config_for("--preset=default", "--preset=fast")
    assert (c.optimizer, c.precision, c.result_prefix) == ("lbfgs", "auto", "paris_generated")


def test_checkout_flagfile_of_a_preset_that_reads_another(monkeypatch):
    monkeypatch.chdir(REPO)  # python -m nst_keras.run --flagfile=configs/high_res.cfg
    assert config_for("--flagfile=configs/high_res.cfg") == config_for("--preset=high_res")
    c = config_for("--flagfile=configs/high_res.cfg")
    assert (c.decay_steps, c.content_weight) == (100, 2.5e-8)  # default's
    assert (c.optimizer, c.learning_rate) == ("adam", 5.0)  # its own, after default's


def test_a_flagfile_of_ones_own_can_start_from_a_preset(tmp_path):
    mine = tmp_path / "mine.cfg"
    mine.write_text("# fast, longer\n--preset=fast\n--iterations=90\n")
    c = config_for(f"--flagfile={mine}")
    assert (c.optimizer, c.iterations, c.loss_normalization) == ("lbfgs", 90, "gap_total")
    assert config_for(f"--flagfile={mine}", "--iterations=5").iterations == 5


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_an_unknown_preset_is_one_line_naming_the_presets(capsys, tmp_path):
    out = tmp_path / "out"
    assert run.main(["nst_keras.run", "--preset=nope", "--content_image=c.png",
                     "--style_image=s.png", f"--output_dir={out}"]) == 2
    line = one_error_line(capsys)
    assert line == ("error: --preset=nope is not known; use one of: "
                    + ", ".join(sorted(DOCUMENTED)))
    assert not out.exists()
    assert run.main(["nst_keras.run", "--preset"]) == 2  # no name at all
    assert one_error_line(capsys).startswith("error: --preset= is not known; use one of: ")


def app_main(argv):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from nst_keras.app import server  # late: the app's extra is optional

    return server.main(argv)


@pytest.mark.parametrize("main", [run.main, batch.main, video.main, app_main],
                         ids=["run", "batch", "video", "app"])
def test_every_command_takes_presets(main, capsys, tmp_path):
    assert main(["prog", "--preset=fast.cfg", f"--output_dir={tmp_path}"]) == 2
    assert one_error_line(capsys).startswith("error: --preset=fast.cfg is not known; use one of: ")
    assert main(["prog", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--preset=NAME" in shown and cli.PRESETS_DIR in shown
    for name in DOCUMENTED:
        assert re.search(rf"^  {name} +\S", shown, re.M), name
    assert "A tutorial-quality picture in a fraction of the tutorial's time." in shown


def test_batch_and_video_flags_read_presets(content_path, style_path):
    cli.parse(["prog", "--preset=fast", f"--content_image={content_path}",
               f"--style_image={style_path}", "--iterations=9"], batch.FLAGS)
    assert (batch.FLAGS.optimizer, batch.FLAGS.iterations) == ("lbfgs", ["9"])
    cli.parse(["prog", "--preset=keep_colors"], video.FLAGS)
    assert (video.FLAGS.preserve_colors, video.FLAGS.optimizer) == ("luminance", "adam")
    cli.parse(["prog"], batch.FLAGS)
    cli.parse(["prog"], video.FLAGS)


# The presets of python -m nst_keras.train (its flags besides the objective's).
TRAINING = {"network_fast", "network_johnson"}


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_the_training_presets_parse_into_valid_training_settings(name, style_path, tmp_path):
    from nst_keras.train import __main__ as train_cli, training_config

    cli.parse(["prog", f"--preset={name}", f"--style_image={style_path}",
               f"--photos={tmp_path}", f"--output={tmp_path / 'n.keras'}"], train_cli.FLAGS)
    config, options = train_cli.settings_from_flags(train_cli.FLAGS)
    built = training_config(config, options)
    assert (built.loss_normalization, built.style_weight, built.color_weight,
            built.pooling, built.precision) == ("gap_total", 200.0, 50.0, "avg", "auto")
    want = {"network_fast": (128, 0.5, 1000), "network_johnson": (256, 1.0, 40000)}[name]
    assert (options.image_size, options.network_width, options.steps) == want
    assert options.batch_size == 4 and options.learning_rate == 1e-3
    with pytest.raises(UserError, match="Unknown command line flag 'image_size'"):
        cli.parse(["prog", f"--preset={name}"])  # not a preset of the run command
    cli.parse(["prog"], train_cli.FLAGS)


@pytest.mark.parametrize("name", sorted(DOCUMENTED - TRAINING))
def test_every_preset_parses_into_a_valid_config(name, content_path, style_path):
    styles = [style_path] * (2 if name == "two_styles" else 1)  # two_styles blends two
    images = (f"--content_image={content_path}", f"--style_image={','.join(styles)}")
    config = settings.validate(cli.preset_config(name, images))
    assert (config.content_image, settings.style_sources(config.style_image)) == (
        content_path, styles)
    flags = read_preset(name)
    assert set(flags) <= set(settings.FIELDS), set(flags) - set(settings.FIELDS)
    # read_preset holds the whole preset, the presets it reads included.
    assert config_for(*[f"--{k}={v}" for k, v in flags.items()], *images) == config
    assert config != config_for(*images)


def test_read_preset_gives_the_files_texts():
    fast = read_preset("fast")
    assert (fast["optimizer"], fast["iterations"], fast["style_weight"]) == ("lbfgs", "50", "200")
    assert fast["jit_compile"] == "false" and "preset" not in fast
    high = read_preset("high_res")
    assert (high["clamp_pixels"], high["result_prefix"], high["scales"]) == (
        "true", "", "512,1024,2048")
    assert high["content_weight"] == "2.5e-8"  # from default.cfg, which it reads
    assert high["iterations"] == "600,200,100"  # its own, after default's 4000


def test_a_preset_that_reads_itself_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "loop.cfg").write_text("# reads itself\n--iterations=3\n--preset=loop\n")
    monkeypatch.setattr(cli, "PRESETS_DIR", str(tmp_path))
    with pytest.raises(UserError, match="more than 16 deep"):
        cli.parse(["prog", "--preset=loop"])


def test_configs_is_the_packages_presets_folder():
    configs = os.path.join(REPO, "configs")
    assert os.path.islink(configs)
    assert os.readlink(configs) == os.path.join("nst_keras", "presets")
    assert os.path.samefile(configs, cli.PRESETS_DIR)
    names = sorted(os.listdir(cli.PRESETS_DIR))
    assert names == sorted(os.listdir(configs)) == sorted(n + ".cfg" for n in DOCUMENTED)
    for name in names:  # data only, and no file names a path of the checkout
        with open(os.path.join(cli.PRESETS_DIR, name), encoding="utf-8") as f:
            text = f.read()
        assert not re.search(r"^-+flagfile", text, re.M), name
        assert "README" not in text, name


# -- the web page's presets ------------------------------------------------------

@pytest.mark.parametrize("page", sorted(forms.PAGE_PRESETS))
def test_the_pages_presets_are_the_parsed_files(page):
    name = forms.PAGE_PRESETS[page][0]
    preset, config = forms.PRESETS[page], config_for(f"--preset={name}")
    assert preset["config"] == {key: getattr(config, key) for key in forms.OBJECTIVE}
    assert preset["form"] == dict(
        rows=config.stage_heights()[-1], optimizer=config.optimizer,
        iterations=",".join(str(n) for n in config.iteration_counts()),
        preserve_colors=config.preserve_colors, init="content")
    if config.scales:
        assert forms._scales(preset, preset["form"]["rows"]) == tuple(config.scales)
    else:
        assert "scales" not in preset


def test_the_page_reads_the_preset_files_not_copies(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    shutil.copytree(cli.PRESETS_DIR, presets)
    with open(presets / "fast.cfg", "a") as f:
        f.write("--iterations=7\n--style_weight=3\n")
    monkeypatch.setattr(cli, "PRESETS_DIR", str(presets))
    fast = forms.load_presets()["fast"]
    assert (fast["form"]["iterations"], fast["config"]["style_weight"]) == ("7", 3.0)
    assert fast["label"] == "Fast (L-BFGS, 7 iterations)"
    assert forms.PRESETS["fast"]["label"] == "Fast (L-BFGS, 50 iterations)"


# -- a new user's install ----------------------------------------------------------

def _venv_with_these_dependencies(venv) -> str:
    """A new virtual environment that imports this one's packages (TensorFlow
    ...) without downloads; returns its python.  Made without its own pip (3 s
    of ensurepip): ``python -m pip`` there is this environment's pip, which
    installs into the new one."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    # Read last (after the new environment's own packages, so its install wins)
    # and as plain folders: their .pth files (an editable install of the
    # checkout among them) are not run in the new environment.
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    with open(os.path.join(own, "zzz_deps.pth"), "w") as f:
        f.write("".join(p + "\n" for p in paths))
    return python


@pytest.mark.slow
def test_a_plain_install_runs_a_preset_from_another_folder(tmp_path):
    pytest.importorskip("setuptools")  # the build backend, used without downloads
    # A copy of the checkout (configs/ symlink kept), so the build's files
    # (build/, *.egg-info) stay out of the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "outputs",
        "venv", ".venv"))
    venv = tmp_path / "venv"
    python = _venv_with_these_dependencies(venv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", NST_KERAS_PRECISION="float32")
    pip = subprocess.run([python, "-m", "pip", "install", "--no-deps",
                          "--no-build-isolation", "--no-index", str(source)],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert re.search(r"Successfully built nst[-_]keras", pip.stdout, re.I), pip.stdout
    assert "editable" not in pip.stdout.lower(), pip.stdout
    work = tmp_path / "elsewhere"  # no configs/ here
    work.mkdir()
    Image.fromarray(make_picture(32, 40, 0)).save(work / "c.png")
    Image.fromarray(make_picture(36, 40, 1)).save(work / "s.png")
    where = subprocess.run([python, "-c", "import nst_keras; print(nst_keras.__file__)"],
                           capture_output=True, text=True, env=env, cwd=work, check=True)
    installed = os.path.dirname(where.stdout.strip())
    assert installed.startswith(str(venv)), where.stdout
    assert os.path.isfile(os.path.join(installed, "presets", "fast.cfg"))
    result = subprocess.run(
        [str(venv / "bin" / "nst-keras"), "--preset=fast", "--content_image=c.png",
         "--style_image=s.png", "--weights=random", "--img_nrows=32", "--iterations=2",
         "--output_dir=out", "--precision=float32"],
        capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    with Image.open(work / "out" / "c_stylized.png") as picture:
        assert (picture.format, picture.height) == ("PNG", 32)
        assert np.asarray(picture).std() > 0

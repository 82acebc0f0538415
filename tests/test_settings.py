"""settings: flag syntax (offsets lists), validation of a Config and of the
commands' options, the network and frames marks, value lists defined once."""

import dataclasses

import pytest

from nst_keras import Config, constants, fields, settings
from nst_keras.app.options import ServerOptions
from nst_keras.batch.options import BatchOptions
from nst_keras.errors import UserError
from nst_keras.fields import parse_offsets
from nst_keras.settings import validate
from nst_keras.video.options import VideoOptions
from conftest import IMAGENET


def test_parse_offsets_syntax_and_errors():
    assert parse_offsets(" 103.939,116.779,123.68 ; 0,0,0; ") == (IMAGENET, (0.0, 0.0, 0.0))
    for bad in ["", "1,2", "1,2,3;4,5", "a,b,c", "1,2,3,4", "1,2,nan"]:
        with pytest.raises(UserError):
            parse_offsets(bad)


def test_validate_parses_flag_syntax_and_rejects_bad_values():
    config = validate(Config(content_image="c.png", experiment="reconstruct_content",
                             reconstruct_layers="block1_conv1, block2_conv1"))
    assert config.reconstruct_layers == ("block1_conv1", "block2_conv1")
    config = validate(Config(content_image="c.png", style_image="s.png",
                             experiment="deprocess_offsets", deprocess_offsets="1,2,3;4,5,6",
                             tradeoff_ratios="1,10"))
    assert config.deprocess_offsets == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    assert config.tradeoff_ratios == (1.0, 10.0)
    for bad in [dict(experiment="tradeoff", tradeoff_ratios=(1.0, float("nan"))),
                dict(experiment="tradeoff", tradeoff_ratios=()),
                dict(experiment="reconstruct_style", reconstruct_layers=()),
                dict(experiment="deprocess_offsets", deprocess_offsets=((1.0, 2.0),))]:
        with pytest.raises(UserError):
            validate(Config(content_image="c.png", style_image="s.png", **bad))


@pytest.mark.parametrize("content,prefix,want", [
    ("photos/cat.jpg", None, "cat_stylized"),
    ("https://example.org/pictures/F28w3Ac.jpg?size=large", None, "F28w3Ac_stylized"),
    ("<array>", None, "stylized"),
    ("photos/cat.jpg", "mine", "mine"),
    ("photos/cat.jpg", "", "cat_stylized"),  # an empty flag (presets) means the default
])
def test_result_prefix_follows_the_content_image(content, prefix, want):
    config = Config(content_image=content, style_image="s.jpg", result_prefix=prefix)
    assert settings.result_prefix(config) == want


def test_array_inputs_are_named_stylized(tmp_path, pictures):
    from nst_keras import stylize

    content, style = pictures
    result = stylize(Config(weights="random", img_nrows=48, iterations=1, log_every=0,
                            save_every=0, output_dir=str(tmp_path)),
                     content=content, style=style, log=lambda line: None)
    assert [p.rsplit("/", 1)[-1] for p in result.paths] == ["stylized.png"]


def _each_field_changed(config):
    """``{name: config with that field set to a value no other setting has}``."""
    return {name: dataclasses.replace(config, **{name: object()}) for name in settings.FIELDS}


def test_network_key_is_exactly_the_fields_marked_network():
    marked = {n for n, f in settings.FIELDS.items() if f.metadata["network"]}
    assert marked == {"model", "weights", "seed", "precision", "pooling", "padding"}
    config = Config(content_image="c.png", style_image="s.png")
    key = settings.network_key(config)
    assert key == tuple(getattr(config, n) for n in settings.FIELDS if n in marked)
    for name, changed in _each_field_changed(config).items():
        assert (settings.network_key(changed) != key) == (name in marked), name


def test_frame_settings_drop_exactly_the_fields_marked_not_in_frames():
    dropped = {n for n, f in settings.FIELDS.items() if not f.metadata["frames"]}
    assert dropped == {"output_dir", "overwrite", "resume", "check_memory", "log_every",
                       "save_every", "content_image", "result_prefix"}
    config = Config(content_image="c.png", style_image="s.png", output_dir="out")
    frames = settings.frame_settings(config)
    assert frames == {k: v for k, v in settings.to_dict(config).items() if k not in dropped}
    for name, changed in _each_field_changed(config).items():
        assert (settings.frame_settings(changed) != frames) == (name not in dropped), name


@pytest.mark.parametrize("options,message", [
    (VideoOptions("v.mp4", "o.mp4", chunk_overlap=-1),
     "--chunk_overlap=-1 must be 0 or more"),
    (VideoOptions("v.mp4", "o.mp4", temporal_frames=(0, 1)),
     "--temporal_frames=0,1 needs frame distances of 1 or more, e.g. 1 or 1,2,4"),
    (VideoOptions("v.mp4", "o.mp4", flow="lucas"),
     "--flow='lucas' is not known; use one of: dis, dis_fast, farneback"),
    (BatchOptions(max_retries=-1), "--max_retries=-1 must be 0 or more"),
    (BatchOptions(pairing="all"), "--pairing='all' is not known"),
    (ServerOptions(max_upload_mb=0), "--max_upload_mb=0 must be a positive integer"),
    (ServerOptions(live_steady=1.5), "--live_steady=1.5 must be 0 (each frame alone) to 0.95"),
])
def test_a_bad_option_is_one_line_naming_its_flag(options, message):
    with pytest.raises(UserError) as e:
        fields.validate_fields(options)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_options_accept_the_flag_syntax_in_python():
    options = fields.validate_fields(VideoOptions("v.mp4", "o.mp4",
                                                    temporal_frames="1,2,4"))
    assert options.temporal_frames == (1, 2, 4)
    with pytest.raises(TypeError):
        VideoOptions()  # the film and the output must be given


def test_value_lists_are_defined_once():
    from nst_keras.engine import hardware
    from nst_keras.experiments import offsets

    assert settings.PRECISION_CHOICES == ("auto",) + hardware.PRECISIONS
    assert list(offsets.KNOWN_NAMES) == list(settings.DEFAULT_DEPROCESS_OFFSETS)
    assert settings.FIELDS["loss_normalization"].metadata["choices"] == \
        settings.LOSS_NORMALIZATIONS
    assert fields.fields_of(VideoOptions)["flow"].metadata["choices"] == \
        constants.FLOWS


def test_checking_settings_never_starts_tensorflow(tmp_path):
    import subprocess
    import sys

    code = ("import sys\n"
            "from nst_keras import settings\n"
            "from nst_keras.video.options import VideoOptions\n"
            "from nst_keras import fields\n"
            "settings.validate(settings.Config(content_image='c.png', style_image='s.png',\n"
            "                                  experiment='none', iterations=3))\n"
            "fields.validate_fields(VideoOptions('v.mp4', 'o.mp4'))\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]

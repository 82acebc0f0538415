"""settings: flag syntax (offsets lists) and validation of a Config."""

import pytest

from nst_keras import Config, settings
from nst_keras.errors import UserError
from nst_keras.settings import parse_offsets, validate
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

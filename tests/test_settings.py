"""settings: flag syntax (offsets lists) and validation of a Config."""

import pytest

from nst_keras import Config
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

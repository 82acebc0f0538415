"""memory: the estimate, the check and the size it suggests."""

import re

import pytest

from nst_keras import Config
from nst_keras.engine import memory
from nst_keras.errors import UserError


def test_memory_check_suggests_a_size_that_fits(monkeypatch):
    have = 3 * 2**30
    monkeypatch.setattr(memory, "available_bytes", lambda: (have, "available memory"))
    config = Config(content_image="c", style_image="s")
    memory.check(400, 600, config)  # fits
    with pytest.raises(UserError) as e:
        memory.check(4000, 6000, config)
    fits = int(re.search(r"about (\d+) fits", str(e.value)).group(1))
    layers = list(config.content_layers) + list(config.style_layers)
    assert memory.estimate_bytes(fits, int(fits * 1.5), "vgg19", layers) <= have
    assert memory.estimate_bytes(fits + 64, int((fits + 64) * 1.5), "vgg19", layers) > have
    memory.check(4000, 6000, config.replace(check_memory=False))  # the escape hatch


def test_memory_estimate_matches_measurement():
    # Peak RSS measured on CPU grew 0.42 GB from 200x300 to 400x600 (memory.py).
    layers = ("block5_conv2",) + tuple(f"block{i}_conv1" for i in range(1, 6))
    grow = memory.estimate_bytes(400, 600, "vgg19", layers) - memory.estimate_bytes(
        200, 300, "vgg19", layers)
    assert 0.42e9 <= grow <= 0.42e9 * 1.6

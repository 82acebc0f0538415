"""Shared fixtures: tiny images made here and random (seeded) VGG weights."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image


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
    from nst_keras.vgg import load_backbone

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


def run_cli(*args):
    """Runs the command line in this process; returns its exit status."""
    from nst_keras import cli

    return cli.main(["nst_keras.run", *args])


def config_for(*argv):
    """The validated ``Config`` the command line builds from ``argv``."""
    from nst_keras import cli

    cli.parse(["prog", *argv])
    return cli.config_from_flags()

"""The VGG feature extractor and the resolution of ``--weights``.

The backbone is the Keras application itself (``keras.applications.VGG19`` or
``VGG16`` with ``include_top=False``), so ``weights="imagenet"`` uses Keras'
own download and cache (``~/.keras/models/``).  The extractor is a copy of
the backbone's layers, cut after the deepest layer the losses read, built with
the requested dtype policy (and optionally average pooling), that maps a
network image ``(1, rows, cols, 3)`` to a dict ``{layer_name: features}``
with features of shape ``(1, rows', cols', channels)``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

from nst_keras.errors import UserError

NOTOP_FILES = {
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def _application(model: str):
    import keras

    return {"vgg19": keras.applications.VGG19, "vgg16": keras.applications.VGG16}[model]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _random_weights(backbone, seed: int) -> None:
    """Glorot-uniform kernels and zero biases from a NumPy generator.

    Independent of Keras' global random state, so the same seed gives the same
    network in any process.
    """
    rng = np.random.default_rng(seed)
    for layer in backbone.layers:
        if not layer.weights:
            continue
        kernel, bias = layer.get_weights()
        kh, kw, cin, cout = kernel.shape
        limit = np.sqrt(6.0 / (kh * kw * (cin + cout)))
        kernel = rng.uniform(-limit, limit, size=kernel.shape).astype(np.float32)
        layer.set_weights([kernel, np.zeros_like(bias)])


@functools.lru_cache(maxsize=4)
def _load_backbone_cached(model: str, weights: str, seed: int, stamp):
    app = _application(model)
    if weights == "random":
        backbone = app(include_top=False, weights=None)
        _random_weights(backbone, seed)
        return backbone, f"random (seeded glorot-uniform, seed {seed})"
    if weights == "imagenet":
        try:
            backbone = app(include_top=False, weights="imagenet")
        except Exception as e:  # noqa: BLE001 - the download is the only thing that fails here
            cache = os.path.join(os.path.expanduser("~"), ".keras", "models")
            raise UserError(
                f"could not get the ImageNet {model.upper()} weights ({_first_line(e)}); "
                f"offline, pass --weights=PATH to a local .h5 file, or place "
                f"{NOTOP_FILES[model]} in {cache}/"
            ) from None
        return backbone, f"imagenet ({NOTOP_FILES[model]} in the Keras cache)"
    path = weights
    if not os.path.exists(path):
        raise UserError(
            f"weights file {path!r} does not exist; pass --weights=PATH to an existing "
            ".h5 file, --weights=imagenet or --weights=random"
        )
    if not path.endswith((".h5", ".hdf5")):
        raise UserError(
            f"weights file {path!r} is not a .h5 file; give a Keras .h5 or .weights.h5 file"
        )
    backbone = app(include_top=False, weights=None)
    try:
        backbone.load_weights(path)
    except Exception as e:  # noqa: BLE001 - h5py/Keras raise many kinds
        raise UserError(
            f"weights file {path!r} does not fit --model={model} ({_first_line(e)}); "
            "check the file or choose the matching --model"
        ) from None
    return backbone, f"file {path}"


def load_backbone(model: str = "vgg19", weights: str = "imagenet", seed: int = 0):
    """Returns ``(backbone, description)`` for ``--model`` and ``--weights``.

    Args:
      model: ``"vgg19"`` or ``"vgg16"``.
      weights: ``"imagenet"``, ``"random"`` or a path to a legacy Keras ``.h5``
        file (what keras.io downloads) or a Keras 3 ``.weights.h5`` file.
      seed: seed of the ``random`` initialisation.

    Raises:
      UserError: the download failed, the file is missing or does not fit.
    """
    stamp = None
    if weights not in ("imagenet", "random") and os.path.exists(weights):
        st = os.stat(weights)
        stamp = (os.path.abspath(weights), st.st_mtime_ns, st.st_size)
    return _load_backbone_cached(model, weights, int(seed), stamp)


def layer_names(backbone) -> Tuple[str, ...]:
    """Names of the layers features can be read from (all but the input)."""
    return tuple(layer.name for layer in backbone.layers[1:])


def check_layers(backbone, names: Iterable[str], model: str) -> None:
    valid = layer_names(backbone)
    for name in names:
        if name not in valid:
            convs = [n for n in valid if "conv" in n]
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(
                f"unknown layer {name!r} for {model}; {hint}valid names: {', '.join(convs)}"
                " (and the blockN_pool layers)"
            )


def _edge_pad_class():
    import keras

    class EdgePad(keras.layers.Layer):
        """Pads height and width with ``pad`` copies of the edge pixels."""

        def __init__(self, pad, **kwargs):
            super().__init__(**kwargs)
            self.pad = int(pad)

        def call(self, x):
            # A one-pixel "symmetric" pad repeats the edge pixel itself.
            for _ in range(self.pad):
                x = keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="symmetric")
            return x

        def get_config(self):
            return {**super().get_config(), "pad": self.pad}

    return EdgePad


_EDGE_PAD = None


def EdgePad(pad, **kwargs):  # noqa: N802 - a layer factory
    """Keras layer padding height and width with copies of the edge pixels."""
    global _EDGE_PAD
    if _EDGE_PAD is None:
        _EDGE_PAD = _edge_pad_class()
    return _EDGE_PAD(pad, **kwargs)


def build_extractor(
    backbone,
    names: Sequence[str],
    precision: str = "float32",
    pooling: str = "max",
    padding: str = "zero",
):
    """Builds the cut feature extractor.

    Args:
      backbone: a VGG ``keras.Model`` from ``load_backbone``.
      names: layers whose outputs the losses read.
      precision: Keras dtype policy (``float32``, ``mixed_bfloat16``,
        ``mixed_float16``) for every layer.
      pooling: ``"max"`` (the network as trained) or ``"avg"`` (average
        pooling with the same conv weights; Gatys et al. found it gives
        slightly smoother results).  Unlike style-transfer-pytorch, the
        averaged activations are not rescaled (the paper does not either).
      padding: ``"zero"`` (the network as trained, keras.io) or
        ``"replicate"``: the first convolution sees the image padded with
        copies of its edge pixels instead of zeros, which reduces dark or
        bright seams along the borders.  This departs from VGG and from Gatys
        et al.; style-transfer-pytorch does the same to its first layer.

    Returns:
      A ``keras.Model`` taking a float32 network image ``(1, rows, cols, 3)``
      and returning ``{name: features}`` (compute dtype of the policy).  Layers
      after the deepest name are not built.
    """
    import keras

    wanted = list(dict.fromkeys(names))
    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    x = inputs
    outputs: Dict[str, object] = {}
    first_conv = True
    for layer in backbone.layers[1:]:
        if len(outputs) == len(wanted):
            break
        config = layer.get_config()
        config["dtype"] = precision
        if (padding == "replicate" and first_conv
                and isinstance(layer, keras.layers.Conv2D)):
            first_conv = False
            x = EdgePad(config["kernel_size"][0] // 2, name=f"{layer.name}_edge_pad",
                        dtype=precision)(x)
            config["padding"] = "valid"
        if isinstance(layer, keras.layers.MaxPooling2D) and pooling == "avg":
            new = keras.layers.AveragePooling2D(
                pool_size=config["pool_size"],
                strides=config["strides"],
                padding=config["padding"],
                name=layer.name,
                dtype=precision,
            )
        else:
            new = layer.__class__.from_config(config)
        x = new(x)
        if layer.weights:
            new.set_weights(layer.get_weights())
        if layer.name in wanted:
            outputs[layer.name] = x
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise UserError(f"unknown layer(s) {', '.join(missing)}")
    return keras.Model(inputs, outputs, name="vgg_features")

"""VGG: the backbone, its weights, the cut feature extractor, and its input format.

Layouts (as ``keras.applications.vgg19`` documents them): a *picture* is a
``uint8`` array ``(rows, cols, 3)`` in RGB order, values 0..255.  A *network
image* is a ``float32`` array or tensor ``(1, rows, cols, 3)`` in BGR order
with the ImageNet channel means subtracted -- what
``keras.applications.vgg19.preprocess_input`` produces.  ``preprocess_image``
and ``deprocess_image`` convert between the two.

The backbone is the Keras application itself (``keras.applications.VGG19`` or
``VGG16`` with ``include_top=False``), so ``weights="imagenet"`` uses Keras'
own download and cache (``~/.keras/models/``).  The extractor is a copy of
the backbone's layers, cut after the deepest layer the losses read, built with
the requested dtype policy (and optionally average pooling), that maps a
network image ``(1, rows, cols, 3)`` to a dict ``{layer_name: features}``
with features of shape ``(1, rows', cols', channels)``.  Outside a
``tf.distribute`` strategy, the last ``KEPT_EXTRACTORS`` extractors are kept:
asking again for the same backbone, layers, precision, pooling and padding
gives the same model (its weights are never changed).
"""

from __future__ import annotations

import difflib
import functools
import os
import weakref
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

from nst_keras.constants import (  # noqa: F401  (re-exported: vgg.MIN_SIDE ...)
    CONTENT_LAYERS, IMAGENET_MEAN_BGR, MIN_SIDE, STYLE_LAYERS)
from nst_keras.errors import UserError

NOTOP_FILES = {
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


# --------------------------------------------------------------------------
# The input format


def preprocess_image(picture) -> np.ndarray:
    """Turns an RGB picture into a network image.

    Args:
      picture: array ``(rows, cols, 3)`` or ``(1, rows, cols, 3)``, RGB, values
        in 0..255 (any numeric dtype).

    Returns:
      ``float32`` array ``(1, rows, cols, 3)``: channels reordered RGB->BGR and
      the ImageNet means (B 103.939, G 116.779, R 123.68) subtracted, exactly
      ``keras.applications.vgg19.preprocess_input``.
    """
    x = np.asarray(picture, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    x = x[..., ::-1] - np.asarray(IMAGENET_MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def deprocess_image(x, mean: Sequence[float] = IMAGENET_MEAN_BGR) -> np.ndarray:
    """Turns a network image back into an RGB picture.

    Args:
      x: array or tensor ``(1, rows, cols, 3)`` or ``(rows, cols, 3)``, BGR,
        mean-centred.
      mean: the offsets added back to channels 0, 1, 2 (B, G, R) before the
        channels are reversed; the ImageNet means undo ``preprocess_image``.

    Returns:
      ``uint8`` array ``(rows, cols, 3)``, RGB.

    Departure from keras.io: the tutorial truncates (``astype("uint8")``);
    this rounds to the nearest integer first, so that preprocess -> deprocess
    returns the original pixels exactly (truncation turns 254.99998 into 254).
    """
    x = np.array(x, dtype=np.float32)
    if x.ndim == 4:
        x = x[0]
    x = x + np.asarray(mean, dtype=np.float32)
    x = x[..., ::-1]
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def pixel_bounds() -> Tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` per B, G, R channel of a network image whose pixels are 0..255."""
    mean = np.asarray(IMAGENET_MEAN_BGR, np.float32)
    return -mean, 255.0 - mean


# --------------------------------------------------------------------------
# The backbone and its weights


def _application(model: str):
    import keras  # late: importing this module must not start TensorFlow

    return {"vgg19": keras.applications.VGG19, "vgg16": keras.applications.VGG16}[model]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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


# --------------------------------------------------------------------------
# The cut extractor


def _edge_pad_class():
    import keras  # late: importing this module must not start TensorFlow

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


def _copy_layer(layer, precision: str, pooling: str, valid_padding: bool):
    """A new layer like ``layer`` under ``precision`` (avg pooling; valid padding)."""
    import keras  # late: importing this module must not start TensorFlow

    config = {**layer.get_config(), "dtype": precision}
    if valid_padding:
        config["padding"] = "valid"
    if isinstance(layer, keras.layers.MaxPooling2D) and pooling == "avg":
        return keras.layers.AveragePooling2D(
            pool_size=config["pool_size"], strides=config["strides"],
            padding=config["padding"], name=layer.name, dtype=precision)
    return layer.__class__.from_config(config)


KEPT_EXTRACTORS = 4  # extractors kept per process (each holds its layers' weights)


def build_extractor(
    backbone,
    names: Sequence[str],
    precision: str = "float32",
    pooling: str = "max",
    padding: str = "zero",
):
    """The cut feature extractor (the one already built for the same arguments,
    outside a ``tf.distribute`` strategy, whose scope mirrors new weights).

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
    import tensorflow as tf  # late: importing this module must not start TensorFlow

    wanted = tuple(dict.fromkeys(names))
    if tf.distribute.has_strategy():
        return _new_extractor(backbone, wanted, precision, pooling, padding)
    return _kept_extractor(backbone, wanted, precision, pooling, padding)


def _new_extractor(backbone, wanted, precision, pooling, padding):
    import keras  # late: importing this module must not start TensorFlow

    inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="image")
    x = inputs
    outputs: Dict[str, object] = {}
    first_conv = True
    for layer in backbone.layers[1:]:
        if len(outputs) == len(wanted):
            break
        edge_pad = (padding == "replicate" and first_conv
                    and isinstance(layer, keras.layers.Conv2D))
        if edge_pad:
            first_conv = False
            x = EdgePad(layer.kernel_size[0] // 2, name=f"{layer.name}_edge_pad",
                        dtype=precision)(x)
        new = _copy_layer(layer, precision, pooling, valid_padding=edge_pad)
        x = new(x)
        if layer.weights:
            new.set_weights(layer.get_weights())
        if layer.name in wanted:
            outputs[layer.name] = x
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise UserError(f"unknown layer(s) {', '.join(missing)}")
    model = keras.Model(inputs, outputs, name="vgg_features")
    _CHAINS[model] = (frozenset(wanted), _layer_ops(model.layers[1:]))
    return model


# The last extractors built outside a strategy, by (backbone, layers, precision,
# pooling, padding); the key holds the backbone, so its identity stays unique.
_kept_extractor = functools.lru_cache(maxsize=KEPT_EXTRACTORS)(_new_extractor)


# The extractors build_extractor made (a chain of layers, each the next one's
# input) -> (the names of their outputs, each layer's name and operation).
_CHAINS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def features(extractor, image) -> Dict[str, object]:
    """``extractor(image, training=False)``: ``{name: features}`` in the layers'
    compute dtype.

    An extractor of ``build_extractor`` runs its convolutions and poolings as
    the TensorFlow operations Keras' layers run (the same values, bit for bit,
    under every precision, pooling and padding) without a Keras call per
    layer: less Python in every trace and in every eager pass (a tiled run's
    targets); any other model is called as it is.
    """
    chain = _CHAINS.get(extractor)
    if chain is None:
        return extractor(image, training=False)
    wanted, ops = chain
    out, x = {}, image
    for name, op in ops:
        x = op(x)
        if name in wanted:
            out[name] = x
    return out


def _layer_ops(layers):
    """``(name, x -> layer(x))`` of each layer: Keras' own operations for VGG's
    convolutions and poolings (the bias through one ``bias_add``: the values of
    Keras' reshape-and-add in fewer graph operations), the layer's call for
    any other."""
    import keras  # late: as above
    import tensorflow as tf  # late: as above

    def conv(layer, dtype):
        def op(x):
            y = tf.nn.convolution(tf.cast(x, dtype), tf.cast(layer.kernel, dtype),
                                  list(layer.strides), layer.padding.upper(),
                                  dilations=list(layer.dilation_rate))
            if layer.use_bias:
                y = tf.nn.bias_add(y, tf.cast(layer.bias, dtype))
            return tf.nn.relu(y) if layer.activation.__name__ == "relu" else y
        return op

    def pool(layer, dtype, fn):
        return lambda x: fn(tf.cast(x, dtype), list(layer.pool_size), list(layer.strides),
                            layer.padding.upper())

    pools = {keras.layers.MaxPooling2D: tf.nn.max_pool,
             keras.layers.AveragePooling2D: tf.nn.avg_pool}
    ops = []
    for layer in layers:
        dtype = layer.compute_dtype
        if isinstance(layer, keras.layers.Conv2D) and _plain_conv(layer):
            op = conv(layer, dtype)
        elif type(layer) in pools and layer.data_format == "channels_last":
            op = pool(layer, dtype, pools[type(layer)])
        else:
            op = layer
        ops.append((layer.name, op))
    return ops


def _plain_conv(layer) -> bool:
    return (layer.data_format == "channels_last" and layer.groups == 1
            and layer.activation.__name__ in ("relu", "linear"))

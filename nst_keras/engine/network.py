"""The feed-forward style network (Johnson, Alahi & Fei-Fei 2016, with Ulyanov
et al.'s instance normalisation): one forward pass stylises a picture.

Layout at ``width=1.0`` (Johnson et al.'s supplementary material, with the
changes that became standard):

* ``c9s1-32``: 9x9 convolution, 32 channels, stride 1;
* ``d64``, ``d128``: 3x3 convolutions of stride 2 (each halves the size);
* five residual blocks ``R128`` (two 3x3 convolutions each);
* ``u64``, ``u32``: nearest-neighbour upsampling by 2 then a 3x3 convolution
  (no transposed convolution: its uneven overlap gives checkerboard
  artifacts, Odena et al. 2016);
* ``c9s1-3``: 9x9 convolution to RGB, ``127.5 * (tanh + 1)``.

Every convolution but the last is followed by instance normalisation
(``InstanceNormalization``) and a ReLU; every one is
preceded by reflection padding (no dark borders).  ``width`` multiplies
every channel count.

The model takes float32 RGB ``(batch, rows, cols, 3)`` in 0..255 of any
size and returns the same shape, float32 in 0..255: a size that is not a
multiple of 4 is reflection-padded on the way in and cropped on the way out.

Several paintings in one network (Dumoulin, Shlens & Kudlur 2017,
"A Learned Representation for Artistic Style"): with ``styles=N > 1`` every
instance normalisation keeps one scale and shift per painting
(``ConditionalInstanceNormalization``) and the model takes a second input,
``style``: float32 ``(batch, N)`` blend weights (summing to 1).  The scale
and shift are the weights' mix of the paintings' own, so a one-hot weight
gives that painting and mixed weights a picture between them; every
convolution is shared.
"""

from __future__ import annotations

import os
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from nst_keras.engine import hardware
from nst_keras.errors import UserError

NAME = "nst_keras_style_network"
_MULTIPLE = 4  # two stride-2 convolutions


def _keep_channels(y, x):
    """``y`` with ``x``'s static channel count restated (a padding of computed
    size, and even a constant padding of an input of unknown size, loses it in
    TensorFlow Lite's converter, whose convolutions need it)."""
    return tf.reshape(y, tf.concat([tf.shape(y)[:3], [int(x.shape[-1])]], 0))


@keras.saving.register_keras_serializable(package="nst_keras")
class Upsample(keras.layers.Layer):
    """Upsampling by 2: ``nearest`` (each pixel becomes a 2x2 block) or
    ``bilinear`` (half-pixel centres)."""

    def __init__(self, method: str = "nearest", **kwargs):
        super().__init__(**kwargs)
        self.method = str(method)

    def call(self, x):
        shape = tf.shape(x)
        y = tf.image.resize(x, tf.stack([2 * shape[1], 2 * shape[2]]), method=self.method)
        return tf.cast(y, x.dtype)

    def compute_output_shape(self, shape):
        grow = lambda n: None if n is None else 2 * n  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "method": self.method}


@keras.saving.register_keras_serializable(package="nst_keras")
class Blur(keras.layers.Layer):
    """A 3x3 binomial low-pass (``[1, 2, 1] / 4`` each way, every channel alone,
    edges mirrored) before a stride-2 convolution, so that its sampling aliases
    less (Zhang, "Making Convolutional Networks Shift-Invariant Again", 2019):
    a photo moved by one pixel then changes the network's coarse features
    smoothly instead of by the phase of the sampling grid."""

    def call(self, x):
        taps = tf.constant([1.0, 2.0, 1.0]) / 4.0
        kernel = (taps[:, None] * taps[None, :])[:, :, None, None]
        kernel = tf.cast(tf.tile(kernel, [1, 1, int(x.shape[-1]), 1]), x.dtype)
        padded = _keep_channels(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT"), x)
        return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")

    def compute_output_shape(self, shape):
        return shape


@keras.saving.register_keras_serializable(package="nst_keras")
class ReflectionPad(keras.layers.Layer):
    """Pads rows and columns by ``pad`` pixels, mirroring the picture's edge."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = int(pad)

    def call(self, x):
        p = self.pad
        return _keep_channels(tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT"), x)

    def compute_output_shape(self, shape):
        grow = lambda n: None if n is None else n + 2 * self.pad  # noqa: E731
        return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


@keras.saving.register_keras_serializable(package="nst_keras")
class PadToMultiple(keras.layers.Layer):
    """Reflection-pads the bottom and right so rows and columns are multiples of
    ``multiple`` (the downsampling's), and scales 0..255 to -1..1."""

    def __init__(self, multiple: int = _MULTIPLE, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)

    def call(self, x):
        shape = tf.shape(x)
        rows = (-shape[1]) % self.multiple
        cols = (-shape[2]) % self.multiple
        y = tf.pad(x, [[0, 0], [0, rows], [0, cols], [0, 0]], mode="REFLECT")
        return _keep_channels(y, x) / 127.5 - 1.0

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="nst_keras")
class CropLike(keras.layers.Layer):
    """``x`` cut to the rows and columns of ``reference`` (undoes ``PadToMultiple``)."""

    def call(self, x, reference):
        shape = tf.shape(reference)
        return x[:, :shape[1], :shape[2], :]

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


def _fused_instance_norm(x, gamma, beta, epsilon: float):
    """Instance normalisation through TensorFlow's fused batch-norm kernel (one
    pass for the statistics, one for the scaling; float32 statistics for
    16-bit ``x``): the batch is moved into the channels, ``(1, rows, cols,
    batch * channels)``, so each picture's channel is its own "batch-norm
    channel".  ``gamma``, ``beta``: float32 ``(channels,)`` or ``(batch,
    channels)``.  Few operations (each costs time when a step is traced)."""
    channels = int(x.shape[-1])
    batch, rows, cols = tf.unstack(tf.shape(x)[:3])
    if len(gamma.shape) == 1:
        many = tf.reshape(batch, [1])
        gamma, beta = tf.tile(gamma, many), tf.tile(beta, many)
    else:
        gamma, beta = tf.reshape(gamma, [-1]), tf.reshape(beta, [-1])
    t = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), tf.stack([1, rows, cols, -1]))
    none = tf.constant([], tf.float32)
    y = tf.raw_ops.FusedBatchNormV3(x=t, scale=gamma, offset=beta, mean=none, variance=none,
                                    epsilon=epsilon, is_training=True)[0]
    y = tf.reshape(y, tf.stack([rows, cols, -1, channels]))
    return tf.transpose(y, [2, 0, 1, 3])


def _plain_instance_norm(x, gamma, beta, epsilon: float):
    """The same as ``_fused_instance_norm`` from moments and elementwise
    operations (what converters to TensorFlow Lite and ONNX understand)."""
    x32 = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x32, axes=[1, 2], keepdims=True)
    if len(gamma.shape) == 2:
        gamma, beta = gamma[:, None, None, :], beta[:, None, None, :]
    y = (x32 - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta
    return tf.cast(y, x.dtype)


@keras.saving.register_keras_serializable(package="nst_keras")
class InstanceNormalization(keras.layers.Layer):
    """Ulyanov et al.'s instance normalisation: each picture's channel scaled to
    mean 0 and variance 1 over its positions, then ``gamma * x + beta`` per
    channel.  The statistics are computed in float32 whatever the layer's
    compute dtype.  ``fused``: through TensorFlow's fused batch-norm kernel
    (1.6-1.8 times faster a network in bfloat16 on a CPU); ``False`` in
    ``portable`` copies, for the converters."""

    def __init__(self, epsilon: float = 1e-5, fused: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.fused = bool(fused)

    def build(self, shape):
        channels = int(shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def normalise(self, x, gamma, beta):
        """``x`` normalised, then scaled by float32 ``gamma`` and shifted by ``beta``
        (``(channels,)``, or ``(batch, channels)``: one pair per picture)."""
        norm = _fused_instance_norm if self.fused else _plain_instance_norm
        return norm(x, gamma, beta, self.epsilon)

    def call(self, x):
        return self.normalise(x, tf.cast(self.gamma, tf.float32),
                              tf.cast(self.beta, tf.float32))

    def compute_output_shape(self, shape):
        return shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "fused": self.fused}


@keras.saving.register_keras_serializable(package="nst_keras")
class ConditionalInstanceNormalization(InstanceNormalization):
    """Instance normalisation with one ``gamma``, ``beta`` per painting
    (``styles`` of them): ``call(x, style)`` with ``style`` the ``(batch,
    styles)`` blend weights uses ``style @ gamma`` and ``style @ beta``."""

    def __init__(self, styles: int, epsilon: float = 1e-5, **kwargs):
        super().__init__(epsilon=epsilon, **kwargs)
        self.styles = int(styles)

    def build(self, x_shape, style_shape=None):
        channels = int(x_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(self.styles, channels),
                                     initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(self.styles, channels),
                                    initializer="zeros")

    def call(self, x, style):
        style = tf.cast(style, tf.float32)
        return self.normalise(x, tf.matmul(style, tf.cast(self.gamma, tf.float32)),
                              tf.matmul(style, tf.cast(self.beta, tf.float32)))

    def compute_output_shape(self, x_shape, style_shape=None):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "styles": self.styles}


def _channels(count: int, width: float) -> int:
    return max(1, int(round(count * width)))


def _conv(x, channels: int, kernel: int, stride: int, name: str, dtype, norm: bool = True,
          relu: bool = True, upsample: bool = False, style=None, antialias: bool = False):
    if upsample:
        x = Upsample("bilinear" if antialias else "nearest", name=f"{name}_up", dtype=dtype)(x)
    if antialias and stride > 1:
        x = Blur(name=f"{name}_blur", dtype=dtype)(x)
    x = ReflectionPad(kernel // 2, name=f"{name}_pad", dtype=dtype)(x)
    x = keras.layers.Conv2D(channels, kernel, strides=stride, padding="valid",
                            name=f"{name}_conv", dtype=dtype)(x)
    if norm and style is None:
        x = InstanceNormalization(name=f"{name}_norm", dtype=dtype)(x)
    elif norm:
        x = ConditionalInstanceNormalization(int(style.shape[-1]), name=f"{name}_norm",
                                             dtype=dtype)(x, style)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu", dtype=dtype)(x)
    return x


def build_network(width: float = 1.0, precision: str = "float32", seed: Optional[int] = 0,
                  styles: int = 1, antialias: bool = False):
    """The style network (see the module docstring) with fresh weights drawn from
    ``seed``; ``precision``: the Keras dtype policy of its layers (the output is
    float32 whatever it is); ``styles``: paintings it holds (more than one: a
    second input of blend weights, ``ConditionalInstanceNormalization``);
    ``antialias``: a ``Blur`` before each stride-2 convolution and bilinear
    instead of nearest-neighbour upsampling (texture less tied to the 4-pixel
    grid; the same weights' shapes)."""
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    dtype = precision
    photo = keras.Input(shape=(None, None, 3), dtype="float32", name="photo")
    style = keras.Input(shape=(int(styles),), dtype="float32", name="style") \
        if styles > 1 else None
    x = PadToMultiple(name="pad_to_multiple", dtype=dtype)(photo)
    x = _conv(x, _channels(32, width), 9, 1, "c1", dtype, style=style)
    x = _conv(x, _channels(64, width), 3, 2, "d1", dtype, style=style, antialias=antialias)
    x = _conv(x, _channels(128, width), 3, 2, "d2", dtype, style=style, antialias=antialias)
    for i in range(5):
        y = _conv(x, _channels(128, width), 3, 1, f"r{i}a", dtype, style=style)
        y = _conv(y, _channels(128, width), 3, 1, f"r{i}b", dtype, relu=False, style=style)
        x = keras.layers.Add(name=f"r{i}_add", dtype=dtype)([x, y])
    x = _conv(x, _channels(64, width), 3, 1, "u1", dtype, upsample=True, style=style,
              antialias=antialias)
    x = _conv(x, _channels(32, width), 3, 1, "u2", dtype, upsample=True, style=style,
              antialias=antialias)
    x = _conv(x, 3, 9, 1, "out", dtype, norm=False, relu=False)
    x = keras.layers.Activation("tanh", name="out_tanh", dtype="float32")(x)
    x = keras.layers.Rescaling(127.5, offset=127.5, name="to_pixels", dtype="float32")(x)
    x = CropLike(name="crop", dtype="float32")(x, photo)
    return keras.Model(photo if style is None else [photo, style], x, name=NAME)


def style_count(model) -> int:
    """Paintings the style network ``model`` holds (its blend input's length)."""
    return 1 if len(model.inputs) == 1 else int(model.inputs[1].shape[-1])


def blend_vector(weights, styles: int) -> np.ndarray:
    """Blend weights of a ``styles``-painting network, normalised to sum 1 (float32).

    ``None``: equal weights.  ``ValueError`` for another count, a negative
    weight or weights summing to 0.
    """
    if weights is None:
        return np.full((styles,), 1.0 / styles, np.float32)
    w = np.asarray([float(v) for v in weights], np.float64).reshape(-1)
    if len(w) != styles:
        raise ValueError(f"the network holds {styles} painting(s); give {styles} blend "
                         f"weights, not {len(w)}")
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError("blend weights must be 0 or more with a positive sum")
    return (w / w.sum()).astype(np.float32)


def is_style_network(model) -> bool:
    """Whether ``model`` is a network this module built (by name and shapes)."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        return False
    return (getattr(model, "name", "") == NAME and len(inputs) in (1, 2) and
            len(outputs) == 1 and tuple(inputs[0].shape)[-1] == 3
            and tuple(outputs[0].shape)[-1] == 3
            and (len(inputs) == 1 or len(tuple(inputs[1].shape)) == 2))


def _copy(model, edit):
    """A copy of ``model`` (same weights) with ``edit(layer_config_entry)`` applied
    to each of its layers' configs first."""
    config = model.get_config()
    for layer in config["layers"]:
        edit(layer)
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def with_precision(model, precision: str = "float32"):
    """A copy of the style network ``model`` computing under the Keras dtype policy
    ``precision`` (same weights; the output stays float32).  Files are saved in
    float32, so they run anywhere; a machine with fast bfloat16 copies them
    to ``mixed_bfloat16`` for speed."""
    def edit(layer):
        if layer["class_name"] != "InputLayer" and layer["config"].get("name") not in _FLOAT32:
            layer["config"]["dtype"] = precision
    return _copy(model, edit)


def portable(model):
    """A copy of the style network ``model`` (same weights, same pictures) whose
    instance normalisations use plain operations instead of the fused kernel,
    which TensorFlow Lite's and ONNX's converters do not take in this form."""
    def edit(layer):
        if "fused" in layer["config"]:
            layer["config"]["fused"] = False
    return _copy(model, edit)


_FLOAT32 = ("out_tanh", "to_pixels", "crop")  # always float32 (build_network)


def compiled_forward(model, jit_compile: bool = False):
    """``model`` as a compiled function ``(photos, style)`` of any batch and size,
    traced once for every shape: a batch of photos of many sizes does not trace
    again, and a frame is no slower than through a trace of its own shape (side
    by side at 256 and 512 pixels on a 2-core AVX512-BF16 CPU: 0.96-1.03x).
    ``style`` (``(batch, N)`` blend weights) is ignored by a one-painting network."""
    if style_count(model) == 1:
        fn = lambda x, style: model(x, training=False)  # noqa: E731
    else:
        fn = lambda x, style: model([x, style], training=False)  # noqa: E731
    any_size = [tf.TensorSpec([None, None, None, 3], tf.float32),
                tf.TensorSpec([None, style_count(model)], tf.float32)]
    return tf.function(fn, input_signature=any_size, jit_compile=jit_compile, autograph=False)


class StyleNetwork:
    """A trained style network as a function of pictures (``load_network``).

    ``network(picture)``: ``uint8`` RGB ``(rows, cols, 3)`` -> ``uint8`` RGB of
    the same size; ``(n, rows, cols, 3)`` -> ``(n, rows, cols, 3)``.  Floats in
    0..255 are accepted too.  ``blend``: one weight per painting of a
    several-painting network (normalised to sum 1; ``None``: equal), or
    ``None`` for a one-painting one.  ``model`` is the Keras model (float32
    0..255 in and out), ``path`` the file it came from, ``styles`` how many
    paintings it holds.
    """

    def __init__(self, model, path: Optional[str] = None):
        self.model, self.path = model, path
        self.styles = style_count(model)
        self._forward = compiled_forward(model)

    def __call__(self, pictures, batch_size: int = 4, blend=None):
        weights = blend_vector(blend, self.styles)
        array = np.asarray(pictures)
        single = array.ndim == 3
        if single:
            array = array[None]
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(f"expected RGB pictures (rows, cols, 3) or (n, rows, cols, 3), "
                             f"got shape {array.shape}")
        out = []
        for i in range(0, len(array), max(1, int(batch_size))):
            part = tf.constant(array[i:i + batch_size], tf.float32)
            y = self._forward(part, tf.constant(np.tile(weights, (len(part), 1))))
            out.append(np.clip(np.round(np.asarray(y)), 0, 255).astype(np.uint8))
        result = np.concatenate(out, 0)
        return result[0] if single else result


def load_network(path: str, precision: str = "float32") -> StyleNetwork:
    """The style network saved at ``path`` (by ``nst_keras.train``), ready to call.

    ``precision``: ``float32``, ``mixed_bfloat16``, ``mixed_float16`` or
    ``auto`` (what ``--precision=auto`` picks for the optimisation on this
    machine, ``hardware.resolve_precision``: bfloat16 only where it is native
    and measured faster).

    Raises ``UserError`` in one line for a missing file or one that is not
    such a network.
    """
    if not os.path.isfile(str(path)):
        raise UserError(f"--network={path} does not exist; give a .keras file that "
                        "python -m nst_keras.train wrote")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001  any file Keras cannot read is the user's to fix
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.split(". ")[0][:120]
        raise UserError(f"--network={path} is not a Keras model file ({first}); give a "
                        ".keras file that python -m nst_keras.train wrote") from None
    if not is_style_network(model):
        raise UserError(f"--network={path} is a Keras model but not a style network "
                        f"(named {getattr(model, 'name', '?')!r}); give a .keras file that "
                        "python -m nst_keras.train wrote")
    if precision == "auto":
        precision, _ = hardware.resolve_precision("auto")
    if precision != "float32":
        model = with_precision(model, precision)
    return StyleNetwork(model, str(path))

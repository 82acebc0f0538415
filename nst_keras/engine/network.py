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

Every convolution but the last is followed by instance normalisation (a
``GroupNormalization`` with one group per channel) and a ReLU; every one is
preceded by reflection padding (no dark borders).  ``width`` multiplies
every channel count.

The model takes float32 RGB ``(batch, rows, cols, 3)`` in 0..255 of any
size and returns the same shape, float32 in 0..255: a size that is not a
multiple of 4 is reflection-padded on the way in and cropped on the way out.
"""

from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

NAME = "nst_keras_style_network"
_MULTIPLE = 4  # two stride-2 convolutions


@keras.saving.register_keras_serializable(package="nst_keras")
class ReflectionPad(keras.layers.Layer):
    """Pads rows and columns by ``pad`` pixels, mirroring the picture's edge."""

    def __init__(self, pad: int, **kwargs):
        super().__init__(**kwargs)
        self.pad = int(pad)

    def call(self, x):
        p = self.pad
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")

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
        x = tf.pad(x, [[0, 0], [0, rows], [0, cols], [0, 0]], mode="REFLECT")
        return x / 127.5 - 1.0

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


def _channels(count: int, width: float) -> int:
    return max(1, int(round(count * width)))


def _conv(x, channels: int, kernel: int, stride: int, name: str, dtype, norm: bool = True,
          relu: bool = True, upsample: bool = False):
    if upsample:
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up",
                                      dtype=dtype)(x)
    x = ReflectionPad(kernel // 2, name=f"{name}_pad", dtype=dtype)(x)
    x = keras.layers.Conv2D(channels, kernel, strides=stride, padding="valid",
                            name=f"{name}_conv", dtype=dtype)(x)
    if norm:
        x = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, name=f"{name}_norm",
                                            dtype=dtype)(x)
    if relu:
        x = keras.layers.ReLU(name=f"{name}_relu", dtype=dtype)(x)
    return x


def build_network(width: float = 1.0, precision: str = "float32", seed: Optional[int] = 0):
    """The style network (see the module docstring) with fresh weights drawn from
    ``seed``; ``precision``: the Keras dtype policy of its layers (the output is
    float32 whatever it is)."""
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    dtype = precision
    photo = keras.Input(shape=(None, None, 3), dtype="float32", name="photo")
    x = PadToMultiple(name="pad_to_multiple", dtype=dtype)(photo)
    x = _conv(x, _channels(32, width), 9, 1, "c1", dtype)
    x = _conv(x, _channels(64, width), 3, 2, "d1", dtype)
    x = _conv(x, _channels(128, width), 3, 2, "d2", dtype)
    for i in range(5):
        y = _conv(x, _channels(128, width), 3, 1, f"r{i}a", dtype)
        y = _conv(y, _channels(128, width), 3, 1, f"r{i}b", dtype, relu=False)
        x = keras.layers.Add(name=f"r{i}_add", dtype=dtype)([x, y])
    x = _conv(x, _channels(64, width), 3, 1, "u1", dtype, upsample=True)
    x = _conv(x, _channels(32, width), 3, 1, "u2", dtype, upsample=True)
    x = _conv(x, 3, 9, 1, "out", dtype, norm=False, relu=False)
    x = keras.layers.Activation("tanh", name="out_tanh", dtype="float32")(x)
    x = keras.layers.Rescaling(127.5, offset=127.5, name="to_pixels", dtype="float32")(x)
    x = CropLike(name="crop", dtype="float32")(x, photo)
    return keras.Model(photo, x, name=NAME)


def is_style_network(model) -> bool:
    """Whether ``model`` is a network this module built (by name and shapes)."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:
        return False
    return (getattr(model, "name", "") == NAME and len(inputs) == 1 and len(outputs) == 1
            and tuple(inputs[0].shape)[-1] == 3 and tuple(outputs[0].shape)[-1] == 3)


def compiled_forward(model, jit_compile: bool = False):
    """``model`` as a compiled function of any batch and size (one trace per shape)."""
    return tf.function(lambda x: model(x, training=False), jit_compile=jit_compile,
                       reduce_retracing=True, autograph=False)

"""nst_keras: neural style transfer (Gatys, Ecker, Bethge 2015) with Keras 3.

The defaults reproduce the keras.io "Neural style transfer" tutorial.
``import nst_keras`` does not start TensorFlow; ``stylize`` and ``Result``
load it on first use.
"""

from nst_keras.errors import Interrupted, NonFiniteLoss, UserError
from nst_keras.imaging import load_image
from nst_keras.settings import Config
from nst_keras.vgg import deprocess_image, preprocess_image

__version__ = "0.1.0"

_PIPELINE_NAMES = ("Result", "stylize")


def __getattr__(name):
    if name in _PIPELINE_NAMES:
        from nst_keras import pipeline  # late: the pipeline imports TensorFlow

        return getattr(pipeline, name)
    raise AttributeError(f"module 'nst_keras' has no attribute {name!r}")


__all__ = [
    "Config",
    "Interrupted",
    "NonFiniteLoss",
    "Result",
    "UserError",
    "deprocess_image",
    "load_image",
    "preprocess_image",
    "stylize",
]

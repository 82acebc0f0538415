"""nst_keras: neural style transfer (Gatys, Ecker, Bethge 2015) with Keras 3.

The defaults reproduce the keras.io "Neural style transfer" tutorial.
``import nst_keras`` does not start TensorFlow; ``stylize``, ``Result`` and
``load_network`` load it on first use.
"""

from nst_keras.engine.imaging import load_image
from nst_keras.engine.vgg import deprocess_image, preprocess_image
from nst_keras.errors import Interrupted, NonFiniteLoss, UserError
from nst_keras.settings import Config

__version__ = "0.1.0"

def __getattr__(name):
    if name == "stylize":
        from nst_keras.output import stylize  # late: the engine imports TensorFlow

        return stylize.stylize
    if name == "Result":
        from nst_keras.engine import pipeline  # late: the engine imports TensorFlow

        return pipeline.Result
    if name == "load_network":
        from nst_keras.engine import network  # late: the engine imports TensorFlow

        return network.load_network
    raise AttributeError(f"module 'nst_keras' has no attribute {name!r}")


__all__ = [
    "Config",
    "Interrupted",
    "NonFiniteLoss",
    "Result",
    "UserError",
    "deprocess_image",
    "load_network",
    "load_image",
    "preprocess_image",
    "stylize",
]

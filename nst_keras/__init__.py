"""nst_keras: neural style transfer (Gatys, Ecker, Bethge 2015) with Keras 3.

The defaults reproduce the keras.io "Neural style transfer" tutorial.
"""

from nst_keras.config import Config
from nst_keras.errors import UserError
from nst_keras.images import deprocess_image, load_image, preprocess_image

__version__ = "0.1.0"


def stylize(config, content=None, style=None, log=print):
    """Runs one style transfer; see ``nst_keras.engine.stylize``."""
    from nst_keras.engine import stylize as _stylize

    return _stylize(config, content=content, style=style, log=log)


__all__ = [
    "Config",
    "UserError",
    "deprocess_image",
    "load_image",
    "preprocess_image",
    "stylize",
]

"""The names and numbers that settings and the engine share, with no TensorFlow.

Allowed values of the choice settings, VGG's layer names and input limits,
the ImageNet means, the tiles' alignment, and the environment variables the
package reads (``ENVIRONMENT``; the docs' table of them is generated from
it).  The engine's modules take these from here, so checking settings never
imports TensorFlow.
"""

# The arithmetic a network can run in (``engine.hardware``).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# VGG (``engine.vgg``): the keras.io tutorial's layers and preprocessing.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1",
                "block5_conv1")
CONTENT_LAYERS = ("block5_conv2",)
MIN_SIDE = 32  # the smallest input VGG accepts (five 2x2 poolings)

MODELS = ("vgg19", "vgg16")
OPTIMIZERS = ("sgd", "adam", "lbfgs")
PRECISION_CHOICES = ("auto",) + PRECISIONS
LOSS_NORMALIZATIONS = ("keras_io", "scaled", "gap", "gap_total")
STYLE_LOSSES = ("gram", "wasserstein", "sliced_wasserstein")
COLOR_LOSSES = ("gaussian", "sliced")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
COLOR_MODES = ("none", "luminance", "histogram")
INITS = ("content", "noise", "style")
POOLINGS = ("max", "avg")
PADDINGS = ("zero", "replicate")
FLOWS = ("dis", "dis_fast", "farneback")  # optical flow of films (nst_keras.engine.flow)
PAIRINGS = ("product", "zip")  # of a batch's contents and styles
EXPERIMENTS = ("none", "deprocess_offsets", "reconstruct_content", "reconstruct_style",
               "tradeoff")

DEFAULT_DEPROCESS_OFFSETS = (
    (103.939, 116.779, 123.68),  # the ImageNet means (B, G, R): undoes preprocessing
    (123.939, 96.779, 96.68),  # a variant tried in a published write-up
    (123.68, 116.779, 103.939),  # the ImageNet means in R, G, B order by mistake
    (0.0, 0.0, 0.0),  # no offsets
)
DEFAULT_TRADEOFF_RATIOS = (0.4, 4.0, 40.0, 400.0, 4000.0)  # keras.io's is 1e-6 / 2.5e-8 = 40

# Learning rates used when ``learning_rate`` is None.  SGD's is the tutorial's
# (its step depends on the loss scale, exactly as in keras.io).  Adam's is in
# pixel units (0..255): Adam's step size does not depend on the gradient's
# scale, so this default holds whatever the loss weights.  L-BFGS has none.
DEFAULT_LEARNING_RATES = {"sgd": 100.0, "adam": 5.0, "lbfgs": None}

# Tiles (``--tile_size``): interiors and halos start on block5's stride.
TILE_ALIGN = 16
MIN_TILE = 64
DISTRIBUTIONS = ("mirrored", "multi_worker")

# Environment variables: name -> what it does (docs/guide.md lists them).
PRECISION_VARIABLE = "NST_KERAS_PRECISION"
VERBOSE_VARIABLE = "NST_KERAS_VERBOSE"
ENVIRONMENT = {
    PRECISION_VARIABLE: "Pins the answer of --precision=auto (float32, mixed_bfloat16 or "
                        "mixed_float16) without measuring; an explicit --precision still wins.",
    VERBOSE_VARIABLE: "Set to anything non-empty: TensorFlow's native start-up messages "
                      "(oneDNN, CUDA probing) are shown instead of silenced.",
    "KERAS_HOME": "The Keras cache folder (default ~/.keras): downloaded VGG weights and "
                  "the per-machine precision cache.",
    "TF_CPP_MIN_LOG_LEVEL": "TensorFlow's C++ log level; the commands set 2 (warnings and "
                            "info hidden) unless it is set.",
    "TF_NUM_INTRAOP_THREADS": "TensorFlow's threads within an operation; set, it replaces "
                              "the default of one per usable core (e.g. 1 for each of two "
                              "runs side by side on two cores).",
    "TF_NUM_INTEROP_THREADS": "TensorFlow's operations run at once; set, it replaces the "
                              "default of at most 2.",
}

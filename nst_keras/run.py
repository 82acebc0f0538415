"""Command line: ``python -m nst_keras.run --flagfile=configs/default.cfg``.

All absl flags live here; they are turned into a ``Config`` and handed to the
engine.  A flag given on the command line after ``--flagfile`` overrides the
file's value.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from nst_keras import config as cfg  # noqa: E402
from nst_keras.errors import UserError  # noqa: E402

FLAGS = flags.FlagValues()

flags.DEFINE_string("content_image", None, "Content photo: a path or an http(s) URL.", flag_values=FLAGS)
flags.DEFINE_string("style_image", None, "Style picture: a path or an http(s) URL; several separated by commas.", flag_values=FLAGS)
flags.DEFINE_string("output_dir", "outputs", "Directory for images and metrics.jsonl.", flag_values=FLAGS)
flags.DEFINE_string("result_prefix", "result", "File name prefix of the written images.", flag_values=FLAGS)
flags.DEFINE_integer("img_nrows", 400, "Output height; the width keeps the content's aspect ratio.", flag_values=FLAGS)
flags.DEFINE_list("iterations", ["4000"], "Optimiser steps; with --scales one number per scale or one for all.", flag_values=FLAGS)
flags.DEFINE_float("content_weight", 2.5e-8, "Weight of the content loss.", flag_values=FLAGS)
flags.DEFINE_float("style_weight", 1e-6, "Weight of the style loss.", flag_values=FLAGS)
flags.DEFINE_float("total_variation_weight", 1e-6, "Weight of the total-variation loss.", flag_values=FLAGS)
flags.DEFINE_list("content_layers", list(cfg.CONTENT_LAYERS), "VGG layers of the content loss.", flag_values=FLAGS)
flags.DEFINE_list("style_layers", list(cfg.STYLE_LAYERS), "VGG layers of the style loss.", flag_values=FLAGS)
flags.DEFINE_float("learning_rate", None, "Initial learning rate (default: 100 for sgd, 5 pixel units for adam).", flag_values=FLAGS)
flags.DEFINE_integer("decay_steps", 100, "ExponentialDecay decay_steps (sgd, adam).", flag_values=FLAGS)
flags.DEFINE_float("decay_rate", 0.96, "ExponentialDecay decay_rate (sgd, adam).", flag_values=FLAGS)
flags.DEFINE_integer("save_every", 100, "Save an image every N steps (0: only the final image).", flag_values=FLAGS)
flags.DEFINE_integer("log_every", 100, "Log and record losses every N steps.", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of random weights and noise.", flag_values=FLAGS)
flags.DEFINE_string("weights", "imagenet", "imagenet (Keras cache/download), random, or a path to a .h5/.weights.h5 file.", flag_values=FLAGS)
flags.DEFINE_string("interpolation", "nearest", "Resampling of the inputs: " + ", ".join(cfg.INTERPOLATIONS) + " (nearest = keras.io).", flag_values=FLAGS)
flags.DEFINE_list("deprocess_mean", [str(v) for v in cfg.IMAGENET_MEAN_BGR], "B,G,R offsets deprocess_image adds back.", flag_values=FLAGS)
flags.DEFINE_string("model", "vgg19", "Backbone: " + ", ".join(cfg.MODELS) + ".", flag_values=FLAGS)
flags.DEFINE_string("optimizer", "sgd", "Optimiser: " + ", ".join(cfg.OPTIMIZERS) + ".", flag_values=FLAGS)
flags.DEFINE_string("precision", "float32", "Network precision: " + ", ".join(cfg.PRECISIONS) + ".", flag_values=FLAGS)
flags.DEFINE_boolean("jit_compile", False, "Compile the step with XLA.", flag_values=FLAGS)

# --- Robustness: overwrite protection, resume, memory check ---
flags.DEFINE_boolean("overwrite", False, "Replace the results of a previous run in --output_dir.", flag_values=FLAGS)
flags.DEFINE_string("resume", None, "Continue the interrupted run whose --output_dir this is (from its checkpoint.npz).", flag_values=FLAGS)
flags.DEFINE_boolean("check_memory", True, "Refuse image sizes whose memory estimate exceeds the free memory.", flag_values=FLAGS)


# --- Artist controls: several styles, style scale, colours, initial image,
# pooling/padding, layer weights, multi-scale, iterate averaging, clamping ---
flags.DEFINE_list("style_blend_weights", None, "One weight per --style_image (normalised to sum 1; default equal).", flag_values=FLAGS)
flags.DEFINE_float("style_scale", 1.0, "Style image resized to this factor times the output size (bigger: bigger strokes).", flag_values=FLAGS)
flags.DEFINE_string("preserve_colors", "none", "Keep the content's colours: none, luminance (style on luminance only) or histogram (style recoloured to the content's colour statistics).", flag_values=FLAGS)
flags.DEFINE_string("init", "content", "Initial image: content (keras.io), noise (seeded by --seed), style, or a path/URL.", flag_values=FLAGS)
flags.DEFINE_string("pooling", "max", "Pooling layers: max (as trained) or avg (same weights, smoother).", flag_values=FLAGS)
flags.DEFINE_string("padding", "zero", "Padding of the first convolution: zero (as trained) or replicate (fewer border seams).", flag_values=FLAGS)
flags.DEFINE_list("style_layer_weights", None, "One weight per --style_layers entry (normalised; default equal).", flag_values=FLAGS)
flags.DEFINE_list("scales", None, "Output heights of a coarse-to-fine run, e.g. 256,512,1024 (overrides --img_nrows).", flag_values=FLAGS)
flags.DEFINE_float("ema_decay", 0.0, "Save an exponential moving average of the image with this decay, e.g. 0.99 (0: off).", flag_values=FLAGS)
flags.DEFINE_boolean("clamp_pixels", False, "Keep every pixel in 0..255 after each step.", flag_values=FLAGS)


def _ints(name, values):
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise UserError(f"--{name}={','.join(values)} must be integers separated by commas") from None


# --- Loss normalisation ---
flags.DEFINE_string("loss_normalization", "keras_io", "keras_io (the tutorial's objective) or scaled (each term a relative error: one set of weights for any network, size and layers).", flag_values=FLAGS)


# --- Experiments (nst_keras.experiments): offsets, reconstructions, trade-off ---
flags.DEFINE_string("experiment", "none", "What to run: none (a style transfer) or an experiment: " + ", ".join(cfg.EXPERIMENTS[1:]) + ".", flag_values=FLAGS)
flags.DEFINE_string("deprocess_offsets", ";".join(",".join(str(v) for v in t) for t in cfg.DEFAULT_DEPROCESS_OFFSETS), "deprocess_offsets: B,G,R triples separated by ';' (quote it in a shell).", flag_values=FLAGS)
flags.DEFINE_list("reconstruct_layers", list(cfg.STYLE_LAYERS), "reconstruct_content: one image per layer; reconstruct_style: growing prefixes of the list.", flag_values=FLAGS)
flags.DEFINE_list("tradeoff_ratios", [str(v) for v in cfg.DEFAULT_TRADEOFF_RATIOS], "tradeoff: style_weight/content_weight ratios, one panel each.", flag_values=FLAGS)


def _floats(name, values, count=None):
    try:
        out = tuple(float(v) for v in values)
    except ValueError:
        raise UserError(f"--{name}={','.join(values)} must be numbers separated by commas") from None
    if count is not None and len(out) != count:
        raise UserError(f"--{name}={','.join(values)} needs {count} numbers")
    return out


def config_from_flags(f=FLAGS) -> cfg.Config:
    """Turns parsed flags into a validated ``Config``."""
    config = cfg.Config(
        content_image=f.content_image,
        style_image=f.style_image,
        output_dir=f.output_dir,
        result_prefix=f.result_prefix,
        img_nrows=f.img_nrows,
        iterations=(_ints("iterations", f.iterations)[0] if len(f.iterations) == 1
                    else _ints("iterations", f.iterations)),
        content_weight=f.content_weight,
        style_weight=f.style_weight,
        total_variation_weight=f.total_variation_weight,
        content_layers=tuple(f.content_layers),
        style_layers=tuple(f.style_layers),
        learning_rate=f.learning_rate,
        decay_steps=f.decay_steps,
        decay_rate=f.decay_rate,
        save_every=f.save_every,
        log_every=f.log_every,
        seed=f.seed,
        weights=f.weights,
        interpolation=f.interpolation,
        deprocess_mean=_floats("deprocess_mean", f.deprocess_mean, 3),
        model=f.model,
        optimizer=f.optimizer,
        precision=f.precision,
        jit_compile=f.jit_compile,
        overwrite=f.overwrite,
        resume=f.resume,
        check_memory=f.check_memory,
        # Artist controls
        style_blend_weights=(None if f.style_blend_weights is None
                             else _floats("style_blend_weights", f.style_blend_weights)),
        style_scale=f.style_scale,
        preserve_colors=f.preserve_colors,
        init=f.init,
        pooling=f.pooling,
        padding=f.padding,
        style_layer_weights=(None if f.style_layer_weights is None
                             else _floats("style_layer_weights", f.style_layer_weights)),
        scales=None if f.scales is None else _ints("scales", f.scales),
        ema_decay=f.ema_decay,
        clamp_pixels=f.clamp_pixels,
        loss_normalization=f.loss_normalization,
        # Experiments
        experiment=f.experiment,
        deprocess_offsets=_offsets(f.deprocess_offsets),
        reconstruct_layers=tuple(f.reconstruct_layers),
        tradeoff_ratios=_floats("tradeoff_ratios", f.tradeoff_ratios),
    )
    if f.resume:  # the interrupted run's settings, with the ones given here checked
        from nst_keras.checkpoint import resume_config

        config = resume_config(f.resume, config, [n for n in f if f[n].present])
    if config.experiment != "none":
        from nst_keras.experiments import validate

        return validate(config)
    return config.validate()


def _offsets(text):
    from nst_keras.experiments.offsets import parse_offsets

    return parse_offsets(text)


def parse(argv) -> None:
    """Parses ``argv`` (program name first) into ``FLAGS``, from defaults."""
    FLAGS.unparse_flags()
    try:
        FLAGS(list(argv))
    except flags.CantOpenFlagFileError as e:
        name = str(e).rsplit(": ", 1)[-1]
        raise UserError(f"cannot open flagfile {name}; check the --flagfile path") from None
    except flags.IllegalFlagValueError as e:
        raise UserError(_bad_value(str(e).splitlines()[0])) from None
    except flags.Error as e:
        raise UserError(str(e).splitlines()[0]) from None


def _bad_value(text: str) -> str:
    """``flag --iterations=abc: invalid literal ...`` -> ``--iterations=abc is not an integer (...)``."""
    if not (text.startswith("flag --") and ": " in text):
        return text
    setting, reason = text[len("flag "):].split(": ", 1)
    name = setting[2:].split("=", 1)[0]
    kind = FLAGS[name].flag_type() if name in FLAGS else ""
    kind = {"int": "an integer", "float": "a number"}.get(kind, "a valid value")
    return f"{setting} is not {kind} ({reason})"


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 closed to its C++ start-up chatter.

    TensorFlow's native start-up lines (oneDNN, CUDA probing) ignore
    ``TF_CPP_MIN_LOG_LEVEL``; they would bury the one-line messages of this
    program.  Set ``NST_KERAS_VERBOSE=1`` to see them.
    """
    if os.environ.get("NST_KERAS_VERBOSE"):
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow as tf

        tf.config.list_physical_devices()  # device probing prints here too
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def main(argv=None) -> int:
    """Entry point; returns the exit status.

    0 finished; 1 stopped on a NaN/Inf loss (last finite image kept); 2 bad
    input or settings (nothing written); 130 interrupted (image and checkpoint
    saved when the loop had started).
    """
    from nst_keras.checkpoint import Interrupted
    from nst_keras.guard import NonFiniteLoss

    argv = sys.argv if argv is None else argv
    if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
        print(__doc__.strip() + "\n\nflags:\n" + FLAGS.get_help(), flush=True)
        return 0
    try:
        parse(argv)
        config = config_from_flags()
        _import_tensorflow_quietly()
        if config.experiment != "none":
            from nst_keras.experiments import run_experiment

            paths = run_experiment(config).paths
            print(f"saved {paths[-1]}" if paths else "done", flush=True)
            return 0
        from nst_keras.engine import stylize

        result = stylize(config)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except Interrupted as e:
        print(f"stopped: {e}", file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:
        print("stopped: interrupted before a checkpoint could be saved; files written "
              "so far are kept", file=sys.stderr, flush=True)
        return 130
    print(f"saved {result.paths[-1]}" if result.paths else "done", flush=True)
    return 0


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()

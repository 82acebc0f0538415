"""Export a trained style network: ``python -m nst_keras.export
--network=painting.keras --format=tflite --output=painting.tflite``.

Every format takes and returns float32 RGB in 0..255, batch first, any size
(``(batch, rows, cols, 3)``):

* ``tflite``: TensorFlow Lite for phones and small boards (a TensorFlow Lite
  interpreter resizes the input to each picture's size).  ``--quantize``:
  ``none`` (float32), ``float16`` (weights stored in float16: half the
  file) or ``int8`` (dynamic-range quantisation: weights in int8, a quarter
  of the file, activations computed in float; no calibration photos needed).
* ``saved_model``: a TensorFlow SavedModel folder for servers (TensorFlow
  Serving, ``tf.saved_model.load``); its ``serving_default`` signature takes
  ``photo`` and returns ``stylized``.
* ``onnx``: ONNX, through the optional ``tf2onnx`` package (``pip install
  tf2onnx``), for ONNX Runtime and the browsers' runtimes.

A network of several paintings (``--style_image=a.jpg,b.jpg`` in training)
keeps its blend as a second input in every format: ``style``, float32
``(batch, paintings)`` weights summing to 1 (one-hot: one painting).

The output is written through a temporary file or folder and a rename;
an existing one is replaced only with ``--overwrite``.

Exit status: 0 written; 2 bad input or settings (nothing written).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import sys
import tempfile

from absl import flags

from nst_keras import cli, fields
from nst_keras.errors import UserError
from nst_keras.output.files import atomic_write_bytes

FORMATS = ("tflite", "saved_model", "onnx")
QUANTIZE = ("none", "float16", "int8")
_export = fields.group("export")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """The options of ``python -m nst_keras.export`` (``export``)."""

    network: str = _export(dataclasses.MISSING, "The trained network (.keras, from python -m "
                           "nst_keras.train).")
    output: str = _export(dataclasses.MISSING, "The exported file (tflite, onnx) or folder "
                          "(saved_model).")
    format: str = _export("tflite", "What to export to.", choices=FORMATS)
    quantize: str = _export("none", "TensorFlow Lite only: none (float32), float16 (weights "
                            "in float16) or int8 (dynamic-range: weights in int8).",
                            choices=QUANTIZE)
    overwrite: bool = _export(False, "Replace an existing --output.", flag="boolean")


def _specs(model):
    import tensorflow as tf  # late: the command checks its flags first

    from nst_keras.engine.network import style_count  # late: as above (TensorFlow)

    specs = [tf.TensorSpec((None, None, None, 3), tf.float32, name="photo")]
    if style_count(model) > 1:
        specs.append(tf.TensorSpec((None, style_count(model)), tf.float32, name="style"))
    return specs


def _signature_function(model):
    import tensorflow as tf  # late: as above

    if len(_specs(model)) == 1:
        @tf.function(input_signature=_specs(model))
        def serve(photo):
            return {"stylized": model(photo, training=False)}
    else:
        @tf.function(input_signature=_specs(model))
        def serve(photo, style):
            return {"stylized": model([photo, style], training=False)}

    return serve


def tflite_bytes(model, quantize: str = "none") -> bytes:
    """The network as a TensorFlow Lite flat buffer (see the module docstring)."""
    import tensorflow as tf  # late: as above

    # from_keras_model freezes the weights into the flat buffer (a concrete
    # function of a Keras 3 model would keep them as uninitialised resources).
    with contextlib.redirect_stdout(io.StringIO()):  # its "Saved artifact at ..." lines
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def save_saved_model(model, path: str) -> None:
    import tensorflow as tf  # late: as above

    module = tf.Module()
    module.model = model
    module.serve = _signature_function(model)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def onnx_bytes(model) -> bytes:
    try:
        import tf2onnx  # late: an optional extra
    except ImportError:
        raise UserError("--format=onnx needs the tf2onnx package; pip install tf2onnx (or "
                        "export --format=saved_model and convert that)") from None
    proto, _ = tf2onnx.convert.from_function(_signature_function(model),
                                             input_signature=tuple(_specs(model)), opset=17)
    return proto.SerializeToString()


def _replace(tmp: str, path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
    os.replace(tmp, path)


def export(options: ExportOptions, log=print) -> str:
    """Writes ``options.network`` in ``options.format`` to ``options.output``; returns it."""
    options = fields.validate_fields(options)
    if options.quantize != "none" and options.format != "tflite":
        raise UserError(f"--quantize={options.quantize} applies to --format=tflite only; "
                        "leave it out")
    out = options.output
    if os.path.exists(out) and not options.overwrite:
        raise UserError(f"--output={out} already exists; pass --overwrite to replace it or "
                        "choose another --output")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UserError(f"--output={out}: {parent} is not a writable folder; choose another "
                        "--output")
    from nst_keras.engine import network as netlib  # late: starts TensorFlow

    model = netlib.load_network(options.network).model
    if options.format == "saved_model":
        tmp = tempfile.mkdtemp(prefix=".tmp-saved_model-", dir=parent)
        try:
            save_saved_model(model, tmp)
            _replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    elif options.format == "tflite":
        try:
            data = tflite_bytes(netlib.portable(model), options.quantize)
        except Exception as e:  # noqa: BLE001  the converter's long report, cut to one line
            lines = [l for l in str(e).splitlines() if "error:" in l] or [type(e).__name__]
            raise UserError(f"TensorFlow Lite could not convert --network={options.network} "
                            f"({lines[0].split('error:', 1)[-1].strip()[:160]}); try "
                            "--format=saved_model") from None
        atomic_write_bytes(out, data)
    else:
        atomic_write_bytes(out, onnx_bytes(netlib.portable(model)))
    log(f"exported {options.network} as {options.format}"
        + (f" ({options.quantize})" if options.format == "tflite" else "") + f" to {out}")
    return out


FLAGS = flags.FlagValues()
cli.define_flags(FLAGS, ExportOptions)


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    if cli.print_help_if_asked(argv, __doc__, FLAGS):
        return 0

    def body() -> int:
        cli.parse(argv, FLAGS)
        for name in ("network", "output"):
            if FLAGS[name].value is None:
                raise UserError(f"no --{name} given; see python -m nst_keras.export --help")
        options = cli.options_from_flags(ExportOptions, FLAGS)
        if not os.path.isfile(options.network):
            raise UserError(f"--network={options.network} does not exist; give a .keras file "
                            "that python -m nst_keras.train wrote")
        cli.import_tensorflow_quietly()
        export(options)
        return 0

    return cli.exit_status(body, lambda e: "interrupted; nothing was written")


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()

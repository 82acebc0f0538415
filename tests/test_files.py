"""The file layer's writing: atomic writes, pictures, digests, the precision cache file."""

import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from nst_keras.engine import hardware
from nst_keras.output import files, precision_cache
from conftest import make_picture

BF16_CPU = hardware.Device("cpu", "AMD EPYC 9R14",
                           frozenset({"avx2", "avx512f", "avx512bw", "avx512_bf16"}))
AVX2 = hardware.Device("cpu", "AMD EPYC 7R32", frozenset({"avx", "avx2", "fma"}))
TURING = hardware.Device("gpu", "Tesla T4", compute_capability=(7, 5))


def never(precision):
    raise AssertionError(f"the probe ran for {precision}")


def broken(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.fixture
def unpinned(monkeypatch):
    """``auto`` really chooses (conftest pins it to float32 for the other tests)."""
    monkeypatch.delenv(hardware.PIN_VARIABLE, raising=False)


# -- atomic writes and pictures ----------------------------------------------------

def test_save_image_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    files.save_image(str(path), make_picture(10, 12))
    before = path.read_bytes()
    monkeypatch.setattr("nst_keras.output.files.os.replace", broken)
    with pytest.raises(OSError):
        files.save_image(str(path), make_picture(10, 12, 5))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_a_saved_picture_has_its_suffix_format_the_usual_mode_and_its_pixels(tmp_path):
    picture = make_picture(10, 12)
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.JPEG", "JPEG"),
                      ("d.webp", "WEBP"), ("e", "PNG")):
        files.save_image(str(tmp_path / name), picture)
        assert Image.open(tmp_path / name).format == fmt, name
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), picture)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "a.png").st_mode & 0o777 == 0o666 & ~umask


def test_sha256_of_streams_the_file(tmp_path):
    blob = tmp_path / "blob"
    data = os.urandom(3 * (1 << 20) + 5)  # more than one block
    blob.write_bytes(data)
    assert files.sha256_of(str(blob)) == hashlib.sha256(data).hexdigest()
    with pytest.raises(OSError):
        files.sha256_of(str(tmp_path / "missing"))


# -- the precision cache file ----------------------------------------------------

def test_the_answer_is_measured_once_then_read_from_the_file(tmp_path, unpinned):
    calls = []

    def measure(precision):
        calls.append(precision)
        return {"float32": 0.078, "mixed_bfloat16": 0.041}[precision]

    with precision_cache.used(str(tmp_path)):
        first = hardware.resolve_precision("auto", "vgg19", device=BF16_CPU, measure=measure)
    assert first[0] == "mixed_bfloat16" and calls == ["float32", "mixed_bfloat16"]
    path = tmp_path / precision_cache.CACHE_NAME
    stored = json.loads(path.read_text())
    (entry,) = stored.values()
    assert entry["precision"] == "mixed_bfloat16" and entry["reason"] == first[1]
    assert entry["timings_s"] == {"float32": 0.078, "mixed_bfloat16": 0.041}
    assert entry["tensorflow"] and entry["date"]
    # the format: indented by one, keys sorted, no trailing newline
    assert path.read_text() == json.dumps(stored, indent=1, sort_keys=True)
    assert os.listdir(tmp_path) == [precision_cache.CACHE_NAME]  # no temporary left

    cache = precision_cache.PrecisionCache(str(tmp_path))  # another process, say
    assert hardware.auto_precision("vgg19", device=BF16_CPU, measure=never, store=cache) == (
        first[0], first[1] + " (cached)")
    hardware.auto_precision("vgg16", device=BF16_CPU, measure=measure, store=cache)
    assert len(calls) == 4 and len(json.loads(path.read_text())) == 2


def test_one_candidate_writes_no_file(tmp_path, unpinned):
    with precision_cache.used(str(tmp_path)):
        assert hardware.resolve_precision("auto", device=AVX2, measure=never)[0] == "float32"
    assert not (tmp_path / precision_cache.CACHE_NAME).exists()


def test_the_cache_file_defaults_to_keras_home(tmp_path, monkeypatch, unpinned):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    hardware.auto_precision(device=TURING, measure=lambda p: 0.1,
                            store=precision_cache.PrecisionCache())
    assert (tmp_path / "keras" / precision_cache.CACHE_NAME).exists()
    monkeypatch.delenv("KERAS_HOME")
    assert precision_cache.cache_path() == os.path.join(
        os.path.expanduser("~"), ".keras", precision_cache.CACHE_NAME)


def test_the_cache_file_is_written_atomically(tmp_path, monkeypatch, unpinned):
    cache = precision_cache.PrecisionCache(str(tmp_path))
    cache.put("a", {"precision": "float32", "reason": "r"})
    before = (tmp_path / precision_cache.CACHE_NAME).read_bytes()
    monkeypatch.setattr("nst_keras.output.files.os.replace", broken)
    cache.put("b", {"precision": "float32", "reason": "r"})  # fails quietly: no caching
    assert (tmp_path / precision_cache.CACHE_NAME).read_bytes() == before
    assert os.listdir(tmp_path) == [precision_cache.CACHE_NAME]


def test_an_unwritable_or_damaged_cache_only_means_no_caching(tmp_path, unpinned):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    calls = []

    def measure(precision):
        calls.append(precision)
        return 0.1

    for _ in range(2):
        with precision_cache.used(str(blocker)):
            assert hardware.auto_precision(device=BF16_CPU, measure=measure)[0] == "float32"
    assert len(calls) == 4
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / precision_cache.CACHE_NAME).write_text("{not json")
    cache = precision_cache.PrecisionCache(str(damaged))
    assert cache.read() == {} and cache.get("x") is None
    hardware.auto_precision(device=BF16_CPU, measure=measure, store=cache)
    assert len(cache.read()) == 1  # replaced by a good file


def test_the_file_layers_stylize_answers_auto_from_the_file(tmp_path, monkeypatch):
    """``output.stylize`` hands the engine the cache file; the engine alone keeps
    answers in memory."""
    from nst_keras.output import stylize

    seen = []

    def fake_stylize(*args, **kwargs):
        seen.append(hardware.current_store())
        return "result"

    monkeypatch.setattr(stylize.pipeline, "stylize", fake_stylize)
    monkeypatch.setattr(stylize.pipeline, "checked", lambda config, *a: config)
    from nst_keras import Config

    assert stylize.stylize(Config(content_image="c", style_image="s")) == "result"
    assert isinstance(seen[0], precision_cache.PrecisionCache)
    assert isinstance(hardware.current_store(), hardware.MemoryStore)

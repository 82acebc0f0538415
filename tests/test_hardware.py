"""--precision=auto and the thread count: the choice as a pure function of the
device and probe timings, the probe, the cache, and what a run records."""

import json

import pytest

from nst_keras import Config, hardware, stylize
from nst_keras.errors import UserError

AVX2 = hardware.Device("cpu", "AMD EPYC", frozenset({"avx", "avx2", "fma"}))
BF16_CPU = hardware.Device("cpu", "AMD EPYC 9R14", frozenset({"avx2", "avx512f", "avx512_bf16"}))
AMX_CPU = hardware.Device("cpu", "Xeon 8488C", frozenset({"avx512f", "amx_bf16", "amx_tile"}))
AMPERE = hardware.Device("gpu", "A100", compute_capability=(8, 0))
TURING = hardware.Device("gpu", "T4", compute_capability=(7, 5))
PASCAL = hardware.Device("gpu", "P100", compute_capability=(6, 0))


def never(precision):
    raise AssertionError(f"probe called for {precision}")


@pytest.fixture
def unpinned(monkeypatch):
    monkeypatch.delenv(hardware.PIN_VARIABLE, raising=False)


def test_avx2_cpu_keeps_float32_without_probing():
    assert hardware.candidates(AVX2) == ["float32"]
    precision, reason = hardware.choose_precision(AVX2, None)
    assert precision == "float32" and "emulate bfloat16" in reason


@pytest.mark.parametrize("device,timings,want", [
    (BF16_CPU, {"float32": 0.10, "mixed_bfloat16": 0.05}, "mixed_bfloat16"),
    (BF16_CPU, {"float32": 0.10, "mixed_bfloat16": 0.16}, "float32"),  # slower
    (BF16_CPU, {"float32": 0.10, "mixed_bfloat16": 0.095}, "float32"),  # within the margin
    (AMX_CPU, {"float32": 0.10, "mixed_bfloat16": 0.03}, "mixed_bfloat16"),
    (AMPERE, {"float32": 0.10, "mixed_bfloat16": 0.04, "mixed_float16": 0.05},
     "mixed_bfloat16"),
    (TURING, {"float32": 0.10, "mixed_float16": 0.04}, "mixed_float16"),
])
def test_the_measured_fastest_candidate_wins(device, timings, want):
    precision, reason = hardware.choose_precision(device, timings)
    assert precision == want
    assert reason.startswith(want) and "ms" in reason


def test_candidates_follow_the_hardware():
    assert hardware.candidates(BF16_CPU) == ["float32", "mixed_bfloat16"]
    assert hardware.candidates(AMX_CPU) == ["float32", "mixed_bfloat16"]
    assert hardware.candidates(AMPERE) == ["float32", "mixed_bfloat16", "mixed_float16"]
    assert hardware.candidates(TURING) == ["float32", "mixed_float16"]
    assert hardware.candidates(PASCAL) == ["float32"]


def test_an_explicit_precision_wins_without_probing(unpinned):
    assert hardware.resolve_precision("float32", device=BF16_CPU, measure=never) == (
        "float32", "given explicitly")
    assert hardware.resolve_precision("mixed_bfloat16", measure=never)[0] == "mixed_bfloat16"
    with pytest.raises(UserError, match="--precision='float8' is not known"):
        hardware.resolve_precision("float8")


def test_the_answer_is_cached_per_machine_and_model(tmp_path, unpinned):
    calls = []

    def measure(precision):
        calls.append(precision)
        return {"float32": 0.1, "mixed_bfloat16": 0.05}[precision]

    first = hardware.resolve_precision("auto", "vgg19", cache_dir=str(tmp_path),
                                       device=BF16_CPU, measure=measure)
    assert first[0] == "mixed_bfloat16" and calls == ["float32", "mixed_bfloat16"]
    cached = json.loads((tmp_path / hardware.CACHE_NAME).read_text())
    assert [v["precision"] for v in cached.values()] == ["mixed_bfloat16"]
    again = hardware.auto_precision("vgg19", cache_dir=str(tmp_path), device=BF16_CPU,
                                    measure=never)
    assert again[0] == "mixed_bfloat16" and again[1].endswith("(cached)")
    hardware.auto_precision("vgg16", cache_dir=str(tmp_path), device=BF16_CPU, measure=measure)
    hardware.auto_precision("vgg19", cache_dir=str(tmp_path), device=AMX_CPU, measure=measure)
    assert len(calls) == 6  # another model, another machine: measured again


def test_the_pin_variable_answers_auto(monkeypatch):
    monkeypatch.setenv(hardware.PIN_VARIABLE, "mixed_bfloat16")
    assert hardware.resolve_precision("auto", measure=never)[0] == "mixed_bfloat16"
    monkeypatch.setenv(hardware.PIN_VARIABLE, "fast")
    with pytest.raises(UserError, match="NST_KERAS_PRECISION"):
        hardware.resolve_precision("auto", measure=never)


def test_the_probe_measures_a_real_step():
    seconds = hardware.probe("float32", size=32, repeats=1)
    assert 0 < seconds < 30


@pytest.mark.parametrize("files,want", [
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu.max": "max 100000\n"}, None),
    ({}, None),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
])
def test_usable_cores_respects_cgroup_quotas(tmp_path, files, want):
    import os

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert hardware.usable_cores(str(tmp_path)) == (min(affinity, want) if want else affinity)


def test_a_run_records_the_chosen_precision_and_threads(
        tmp_path, content_path, style_path, monkeypatch):
    monkeypatch.delenv(hardware.PIN_VARIABLE, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # a fresh cache
    out = tmp_path / "run"
    lines = []
    stylize(Config(content_image=content_path, style_image=style_path, weights="random",
                   img_nrows=48, iterations=2, log_every=1, save_every=0,
                   output_dir=str(out)), log=lines.append)
    device = json.loads((out / "run.json").read_text())["device"]
    want, _ = hardware.auto_precision()
    assert device["precision_requested"] == "auto"
    assert device["precision"] == want in hardware.PRECISIONS
    assert device["threads"] >= 1 and device["precision_reason"]
    assert f"{want} (auto: " in lines[0]
    assert json.loads((out / "run.json").read_text())["flags"]["precision"] == "auto"

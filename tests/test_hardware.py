"""--precision=auto and the thread count: candidates from the hardware, the choice
as a pure function of the device and probe timings, the store of answers (the
cache file is the file layer's: tests/test_files.py), the real probe, and the
cores a cgroup quota leaves."""

import math
import os
import subprocess
import sys

import pytest

from nst_keras.engine import hardware
from nst_keras.errors import UserError

AVX2 = hardware.Device("cpu", "AMD EPYC 7R32", frozenset({"sse4_2", "avx", "avx2", "fma"}))
BF16_CPU = hardware.Device("cpu", "AMD EPYC 9R14",
                           frozenset({"avx2", "avx512f", "avx512bw", "avx512_bf16"}))
AMX_CPU = hardware.Device("cpu", "Intel Xeon Platinum 8488C",
                          frozenset({"avx2", "avx512f", "amx_bf16", "amx_tile", "amx_int8"}))
AMPERE = hardware.Device("gpu", "NVIDIA A100-SXM4-40GB", compute_capability=(8, 0))
TURING = hardware.Device("gpu", "Tesla T4", compute_capability=(7, 5))
PASCAL = hardware.Device("gpu", "Tesla P4", compute_capability=(6, 1))


def never(precision):
    raise AssertionError(f"the probe ran for {precision}")


@pytest.fixture
def unpinned(monkeypatch):
    """``auto`` really chooses (conftest pins it to float32 for the other tests)."""
    monkeypatch.delenv(hardware.PIN_VARIABLE, raising=False)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\n"
                       "flags\t\t: FPU avx2 avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert hardware.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512_bf16", "amx_tile"}
    assert hardware.cpu_name(str(cpuinfo)) == "Some CPU"
    assert hardware.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_native_bfloat16_and_candidates_follow_the_hardware():
    assert [hardware.has_native_bfloat16(d) for d in
            (AVX2, BF16_CPU, AMX_CPU, AMPERE, TURING, PASCAL)] == [
                False, True, True, True, False, False]
    assert hardware.candidates(AVX2) == ["float32"]
    assert hardware.candidates(BF16_CPU) == ["float32", "mixed_bfloat16"]
    assert hardware.candidates(AMX_CPU) == ["float32", "mixed_bfloat16"]
    assert hardware.candidates(AMPERE) == ["float32", "mixed_bfloat16"]
    assert hardware.candidates(TURING) == ["float32", "mixed_float16"]
    assert hardware.candidates(PASCAL) == ["float32"]


def test_an_avx2_cpu_keeps_float32_because_bfloat16_would_be_emulated():
    precision, reason = hardware.choose_precision(AVX2, None)
    assert precision == "float32"
    assert "no AVX512-BF16 or AMX" in reason and "emulate bfloat16" in reason
    # Even a (bogus) timing where bfloat16 looks fast cannot pick an emulated precision.
    assert hardware.choose_precision(AVX2, {"float32": 1.0, "mixed_bfloat16": 0.1})[0] == \
        "float32"


def test_an_old_gpu_keeps_float32():
    precision, reason = hardware.choose_precision(PASCAL, None)
    assert precision == "float32" and "6.1" in reason


@pytest.mark.parametrize("device,timings,want", [
    (BF16_CPU, {"float32": 0.078, "mixed_bfloat16": 0.041}, "mixed_bfloat16"),
    (BF16_CPU, {"float32": 0.078, "mixed_bfloat16": 0.120}, "float32"),  # slower
    (BF16_CPU, {"float32": 0.100, "mixed_bfloat16": 0.095}, "float32"),  # within 10 %
    (BF16_CPU, {"float32": 0.100, "mixed_bfloat16": 0.089}, "mixed_bfloat16"),  # 11 %
    (AMX_CPU, {"float32": 0.100, "mixed_bfloat16": 0.030}, "mixed_bfloat16"),
    (AMPERE, {"float32": 0.100, "mixed_bfloat16": 0.040}, "mixed_bfloat16"),
    (AMPERE, {"float32": 0.100, "mixed_bfloat16": 0.150}, "float32"),
    (TURING, {"float32": 0.100, "mixed_float16": 0.040}, "mixed_float16"),
    (TURING, {"float32": 0.100, "mixed_float16": 0.098}, "float32"),
])
def test_the_measured_fastest_candidate_wins_by_a_margin(device, timings, want):
    precision, reason = hardware.choose_precision(device, timings)
    assert precision == want
    assert reason.startswith(f"{want}: ") and reason.count("ms") == len(timings)
    for p, seconds in timings.items():
        assert f"{1000 * seconds:.0f} ms" in reason and p in reason


def test_the_reason_reads_as_one_line():
    assert hardware.choose_precision(BF16_CPU, {"float32": 0.078, "mixed_bfloat16": 0.041}) == (
        "mixed_bfloat16", "mixed_bfloat16: 41 ms vs float32 78 ms per probe step (AVX512-BF16)")


def test_the_device_key_names_the_machine_not_unrelated_flags():
    more = hardware.Device("cpu", BF16_CPU.name, BF16_CPU.cpu_flags | {"hypervisor", "rdrand"})
    assert more.key() == BF16_CPU.key() == "cpu|AMD EPYC 9R14|avx2,avx512_bf16,avx512bw,avx512f"
    assert len({d.key() for d in (AVX2, BF16_CPU, AMX_CPU, AMPERE, TURING, PASCAL)}) == 6
    assert AMPERE.key() == "gpu|NVIDIA A100-SXM4-40GB|8.0"


def test_an_explicit_precision_wins_without_probing(unpinned):
    assert hardware.resolve_precision("float32", device=BF16_CPU, measure=never) == (
        "float32", "given explicitly")
    assert hardware.resolve_precision("mixed_bfloat16", device=AVX2, measure=never) == (
        "mixed_bfloat16", "given explicitly")


def test_an_unknown_precision_is_a_user_error_naming_the_valid_ones():
    with pytest.raises(UserError) as raised:
        hardware.resolve_precision("float8", measure=never)
    message = str(raised.value)
    assert "\n" not in message and "'float8'" in message and "auto" in message
    assert all(p in message for p in hardware.PRECISIONS)


def test_auto_on_a_cpu_without_bfloat16_does_not_probe(unpinned):
    store = hardware.MemoryStore()
    assert hardware.resolve_precision("auto", device=AVX2, measure=never,
                                      store=store)[0] == "float32"
    assert store.entries == {}  # nothing measured, nothing stored


def test_the_answer_is_measured_once_then_stored_per_machine_and_model(unpinned):
    calls = []

    def measure(precision):
        calls.append(precision)
        return {"float32": 0.078, "mixed_bfloat16": 0.041}[precision]

    store = hardware.MemoryStore()
    first = hardware.resolve_precision("auto", "vgg19", device=BF16_CPU, measure=measure,
                                       store=store)
    assert first[0] == "mixed_bfloat16" and not first[1].endswith("(cached)")
    assert calls == ["float32", "mixed_bfloat16"]
    ((key, entry),) = store.entries.items()
    assert key.startswith(BF16_CPU.key() + "|tensorflow ") and key.endswith("|vgg19")
    assert entry["precision"] == "mixed_bfloat16" and entry["reason"] == first[1]
    assert entry["timings_s"] == {"float32": 0.078, "mixed_bfloat16": 0.041}
    assert entry["tensorflow"] and entry["date"]

    again = hardware.auto_precision("vgg19", device=BF16_CPU, measure=never, store=store)
    assert again == (first[0], first[1] + " (cached)")

    hardware.auto_precision("vgg16", device=BF16_CPU, measure=measure, store=store)
    hardware.auto_precision("vgg19", device=AMX_CPU, measure=measure, store=store)
    assert len(calls) == 6  # another model, another machine: measured again
    assert len(store.entries) == 3


def test_a_stored_entry_that_is_not_a_candidate_is_measured_again(unpinned):
    store = hardware.MemoryStore()
    hardware.auto_precision(device=TURING, measure=lambda p: 0.1, store=store)
    (key,) = store.entries
    store.entries[key] = {"precision": "mixed_bfloat16", "reason": "from another machine"}
    calls = []
    hardware.auto_precision(device=TURING, measure=lambda p: calls.append(p) or 0.1,
                            store=store)
    assert calls == ["float32", "mixed_float16"]


def test_using_store_answers_auto_within_the_block_only(unpinned):
    mine = hardware.MemoryStore()
    before = hardware.current_store()
    with hardware.using_store(mine):
        assert hardware.current_store() is mine
        hardware.resolve_precision("auto", device=TURING, measure=lambda p: 0.1)
    assert hardware.current_store() is before and len(mine.entries) == 1
    # Without a store handed in, answers stay in this process's memory.
    assert isinstance(before, hardware.MemoryStore)


def test_the_pin_variable_answers_auto(monkeypatch):
    monkeypatch.setenv(hardware.PIN_VARIABLE, "mixed_bfloat16")
    assert hardware.resolve_precision("auto", device=AVX2, measure=never)[0] == "mixed_bfloat16"
    monkeypatch.setenv(hardware.PIN_VARIABLE, "fast")
    with pytest.raises(UserError, match="NST_KERAS_PRECISION"):
        hardware.resolve_precision("auto", measure=never)


def test_the_probe_times_a_real_step():
    seconds = hardware.probe("float32", size=32, repeats=1)
    assert math.isfinite(seconds) and 0 < seconds < 30


@pytest.mark.parametrize("files,cap", [
    ({"cpu.max": "150000 100000\n"}, 2),
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu.max": "max 100000\n"}, None),
    ({}, None),
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
])
def test_usable_cores_respects_cgroup_quotas(tmp_path, files, cap):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert hardware.usable_cores(str(tmp_path)) == (min(affinity, cap) if cap else affinity)


def test_threads_are_set_before_tensorflow_starts_and_kept_after():
    script = (
        "import sys\n"
        "from nst_keras.engine import hardware\n"
        "assert 'tensorflow' not in sys.modules\n"
        "used = hardware.configure_threads(1)\n"
        "import tensorflow as tf\n"
        "t = tf.config.threading\n"
        "print(used, t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())\n"
        "tf.constant(1.0) + 1.0\n"
        "print(hardware.configure_threads(3))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1", "1", "1"]  # after the start: left at 1


@pytest.mark.parametrize("intra,inter,want", [
    (None, None, ("cores", "min2")), ("1", None, (1, 1)), ("3", "1", (3, 1)),
    ("junk", "", ("cores", "min2"))])
def test_tensorflows_thread_variables_replace_the_defaults(monkeypatch, intra, inter, want):
    import tensorflow as tf

    for name, value in (("TF_NUM_INTRAOP_THREADS", intra), ("TF_NUM_INTEROP_THREADS", inter)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    got = {}
    monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads",
                        lambda n: got.__setitem__("intra", n))
    monkeypatch.setattr(tf.config.threading, "set_inter_op_parallelism_threads",
                        lambda n: got.__setitem__("inter", n))
    cores = hardware.usable_cores()
    expect = (cores if want[0] == "cores" else want[0],
              min(2, cores) if want[1] == "min2" else want[1])
    assert hardware.configure_threads() == expect[0]
    assert (got["intra"], got["inter"]) == expect
    assert hardware.configure_threads(2) == 2 and got["intra"] == 2  # an explicit count wins

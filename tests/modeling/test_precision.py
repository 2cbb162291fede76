"""CPU precision, layout and thread choice (dpsnet.utils.precision)."""

import copy

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from dpsnet.utils import cpu_probe
from dpsnet.utils import precision as P

AMX = {"avx2", "avx512f", "amx_bf16", "avx512_bf16"}
AVX2 = {"avx2", "fma"}


def _probe(
    fp32: float,
    bf16: float,
    fp32_cl: float | None = None,
    bf16_cl: float | None = None,
    pool: tuple[float, float] | None = None,
):
    calls = []

    def probe(threads):
        calls.append(threads)
        out = {
            "float32": fp32,
            "bfloat16": bf16,
            "float32_cl": fp32 if fp32_cl is None else fp32_cl,
            "bfloat16_cl": bf16 if bf16_cl is None else bf16_cl,
            "seconds": 0.0,
        }
        if pool is not None:  # (contiguous, channels-last) seconds of the stem's max pool
            for dtype in ("float32", "bfloat16"):
                out[f"pool_{dtype}"], out[f"pool_{dtype}_cl"] = pool
        return out

    return probe, calls


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DPSNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_auto_without_bf16_flags_is_float32_without_probing_precision():
    probe, calls = _probe(1.0, 0.1)
    s = P.resolve_cpu_settings("auto", "off", flags=AVX2, probe=probe)
    assert s.precision == "float32"
    assert calls == []  # flags alone decide "no"; only a "yes" needs the probe
    assert "no bf16 flags" in s.reason


def test_auto_with_flags_but_slow_bf16_is_float32():
    probe, calls = _probe(1.0, 19.0)  # the AVX2-like measurement, on a CPU claiming bf16
    s = P.resolve_cpu_settings("auto", "off", flags=AMX, probe=probe)
    assert s.precision == "float32" and calls == [1]


def test_auto_with_flags_and_fast_bf16_is_bfloat16():
    probe, _ = _probe(1.0, 0.37)
    s = P.resolve_cpu_settings("auto", "auto", flags=AMX, probe=probe)
    assert s.precision == "bfloat16" and s.dtype == torch.bfloat16
    assert s.channels_last is False  # same timing in both layouts: no gain, stays off


def test_channels_last_auto_follows_the_probe():
    probe, _ = _probe(1.0, 2.0, fp32_cl=0.5)
    s = P.resolve_cpu_settings("float32", "auto", flags=AVX2, probe=probe)
    assert s.precision == "float32" and s.channels_last is True


@pytest.mark.parametrize(
    "pool,layout,expected",
    [
        ((3.0, 1.0), "auto", True),
        ((1.0, 1.0), "auto", False),
        ((3.0, 1.0), "off", False),
        (None, "auto", False),
    ],
)
def test_stem_pool_layout_follows_the_probe(pool, layout, expected):
    probe, _ = _probe(1.0, 2.0, pool=pool)  # the trunk itself stays contiguous
    s = P.resolve_cpu_settings("float32", layout, flags=AVX2, probe=probe)
    assert not s.channels_last and s.pool_channels_last is expected


def test_channels_last_stem_pool_is_exact(cfg, make_input):
    """The stem's max pool in channels-last changes the time, never a value or the layout."""
    ref = build_model(cfg)
    ref.eval()
    model = copy.deepcopy(ref)
    P.apply_cpu_settings(model, P.CpuSettings(pool_channels_last=True, threads=1))
    P.apply_cpu_settings(model, P.CpuSettings(pool_channels_last=True, threads=1))  # idempotent
    x = make_input(96, 128, [[10, 10, 50, 60]], [1])
    stem_a, stem_b = ref.backbone.bottom_up.stem, model.backbone.bottom_up.stem
    with torch.no_grad():
        t = ref.preprocess_image([x]).tensor
        a, b = stem_a(t), stem_b(t)
        out_a, out_b = ref([x])[0], model([x])[0]
    assert b.is_contiguous() and torch.equal(a, b)
    assert len(stem_b._forward_hooks) == 1
    torch.testing.assert_close(out_b["counts"], out_a["counts"], rtol=1e-5, atol=1e-5)


def test_probe_is_cached_per_machine():
    probe, calls = _probe(1.0, 0.3)
    P.resolve_cpu_settings("auto", "off", flags=AMX, probe=probe)
    P.resolve_cpu_settings("auto", "off", flags=AMX, probe=probe)
    assert calls == [1]


def test_explicit_and_bad_values():
    probe, calls = _probe(1.0, 0.3)
    s = P.resolve_cpu_settings("bfloat16", "on", flags=AVX2, probe=probe)
    assert (s.precision, s.channels_last, calls) == ("bfloat16", True, [])
    with pytest.raises(ValueError, match="MODEL.PRECISION"):
        P.resolve_cpu_settings("fp8", "off", flags=AMX, probe=probe)


def test_threads_from_free_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(P.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cpu_probe, "busy_cores", lambda: 0)
    assert P.compute_threads(loader_workers=0) == 4
    assert P.compute_threads(loader_workers=1) == 3
    assert P.compute_threads(loader_workers=1, processes_per_machine=2) == 1
    assert P.compute_threads(loader_workers=8) == 1
    monkeypatch.setattr(cpu_probe, "busy_cores", lambda: 3)  # 3 cores kept busy
    assert P.compute_threads(loader_workers=0) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert P.compute_threads(loader_workers=1) == 3  # an explicit setting wins


def test_real_probe_returns_all_timings():
    t = P.probe_cpu(threads=1)
    keys = ["float32", "bfloat16", "float32_cl", "bfloat16_cl"]
    keys += [f"pool_{k}" for k in keys]
    assert set(keys) <= set(t)
    assert all(t[k] > 0 for k in keys)


@pytest.mark.parametrize("precision,channels_last", [("bfloat16", False), ("float32", True)])
def test_switches_keep_shapes_and_values(cfg, make_input, precision, channels_last):
    """Each switch gives the same outputs (shapes, and values within bf16 rounding)."""
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    ref = build_model(cfg)
    ref.eval()
    model = copy.deepcopy(ref)
    s = P.CpuSettings(precision=precision, channels_last=channels_last, threads=1)
    P.apply_cpu_settings(model, s)
    x = make_input(96, 128, [[10, 10, 50, 60]], [1])
    with torch.no_grad():
        a = ref.backbone(ref.preprocess_image([x]).tensor)
        b = model.backbone(model.preprocess_image([x]).tensor)
        out_a, out_b = ref([x])[0], model([x])[0]
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape
        assert b[k].float().is_contiguous(memory_format=torch.channels_last) == channels_last
    inst = out_b["instances"]
    assert inst.scores.dtype == torch.float32 and inst.pred_boxes.tensor.dtype == torch.float32
    inst.scores.numpy()  # consumers convert outputs to numpy: no bfloat16 may leave the model
    tol = 0.08 if precision == "bfloat16" else 1e-4
    for k in ("density", "counts"):
        assert out_a[k].shape == out_b[k].shape and out_b[k].dtype == torch.float32
        torch.testing.assert_close(out_b[k], out_a[k], rtol=tol, atol=tol * out_a[k].abs().max())
    feat = "p3"
    scale = a[feat].abs().max()
    torch.testing.assert_close(b[feat].float(), a[feat], rtol=tol, atol=tol * scale)


def test_bf16_training_step_gives_float32_losses_close_to_float32(cfg, make_input):
    ref = build_model(cfg)
    model = copy.deepcopy(ref)
    P.apply_cpu_settings(model, P.CpuSettings(precision="bfloat16", threads=1))
    x = make_input(96, 128, [[10, 10, 50, 60], [60, 20, 110, 80]], [1, 2])
    with EventStorage(0):
        torch.manual_seed(1)
        la = ref([x])
        torch.manual_seed(1)
        lb = model([x])
    assert la.keys() == lb.keys()
    for k in la:
        assert lb[k].dtype == torch.float32 and torch.isfinite(lb[k])
        torch.testing.assert_close(lb[k], la[k], rtol=0.1, atol=0.05)
    sum(lb.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)


def test_busy_cores_from_a_short_sample_of_proc_stat(monkeypatch):
    samples = iter([(100, 1000), (100 + 150, 1000 + 200)])  # 75 % of all cores busy
    monkeypatch.setattr(cpu_probe, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(cpu_probe.time, "sleep", lambda _s: None)
    monkeypatch.setattr(cpu_probe.os, "cpu_count", lambda: 4)
    assert cpu_probe.busy_cores() == 3
    monkeypatch.setattr(cpu_probe, "_cpu_times", lambda: None)  # no /proc/stat: load average
    monkeypatch.setattr(cpu_probe.os, "getloadavg", lambda: (1.4, 0.0, 0.0))
    assert cpu_probe.busy_cores() == 1


def test_bf16_inference_reuses_weight_copies_exactly(cfg, make_input, monkeypatch):
    """bfloat16 weight copies kept across inferences give autocast's own results, are remade
    when a weight changes in place, and the float32 parameters are back after each forward."""
    import contextlib

    model = build_model(cfg)
    model.eval()
    P.apply_cpu_settings(model, P.CpuSettings(precision="bfloat16", threads=1))
    x = make_input(96, 128, [[10, 10, 50, 60]], [1])
    conv = model.backbone.bottom_up.stem.conv1

    def run(cached: bool):
        with monkeypatch.context() as m, torch.no_grad():  # undoes only its own patch
            if not cached:
                m.setattr(P, "_bfloat16_weights", lambda _m: contextlib.nullcontext())
            return model([x])[0]

    for _ in range(2):  # the second pass uses the kept copies
        a, b = run(True), run(False)
        torch.testing.assert_close(a["density"], b["density"], rtol=0, atol=0)
    assert isinstance(conv.weight, torch.nn.Parameter) and conv.weight.dtype == torch.float32
    with torch.no_grad():
        # an optimizer step or a loaded checkpoint: in place (not a uniform scale, which the
        # trunk's ReLUs and the FPN's group norm would hide)
        conv.weight.add_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0)))
    a, b = run(True), run(False)
    torch.testing.assert_close(a["density"], b["density"], rtol=0, atol=0)

"""Precision, memory layout and threads for CPU training and inference, decided by measuring.

The same setting is right on one machine and ruinous on another: bfloat16 autocast ran a
ResNet-18 training step 2.7x faster on a Xeon with AMX and 19x slower on an AVX2-only EPYC
(REFERENCE.md). So ``auto`` never trusts flags alone: a CPU without bf16 flags gets float32
without trying, and one with them runs a short timing probe (a small conv net's forward and
backward, a few hundred milliseconds) in float32 and in bfloat16, in both memory layouts, and
takes what measured faster (:mod:`dpsnet.utils.cpu_probe`; cached per machine, so tools pay it
once).

CUDA keeps detectron2's own AMP (``SOLVER.AMP.ENABLED``); nothing here applies there.

Threads: compute threads = usable cores (``os.sched_getaffinity``) not already kept busy by other
processes (the load average) minus the data loader's worker processes, at least one; an explicit
``OMP_NUM_THREADS`` wins. Under ``torch.distributed`` each of the machine's processes gets its
share.
"""

import functools
import logging
import os
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from dpsnet.utils.cpu_probe import (
    busy_cores,
    cached_probe,
    compute_threads,
    cpu_flags,
    has_bf16_flags,
    probe_cpu,
    usable_cores,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CpuSettings",
    "autocast_context",
    "compute_threads",
    "cpu_flags",
    "has_bf16_flags",
    "probe_cpu",
    "resolve_cpu_settings",
    "apply_cpu_settings",
]

#: bf16 or channels-last must be at least this much faster to be chosen (noise margin).
_MIN_GAIN = 1.1


@dataclass
class CpuSettings:
    """What a CPU process runs with, and why."""

    precision: str = "float32"  # "float32" | "bfloat16"
    channels_last: bool = False
    # The stem's max pool alone in channels-last (the rest contiguous): exact, and 3-4x faster
    # where PyTorch's contiguous max pool has no vectorised CPU kernel.
    pool_channels_last: bool = False
    threads: int = 1
    reason: str = ""
    probe: dict = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bfloat16" else torch.float32

    def to_dict(self) -> dict:
        return asdict(self)


def _choose(setting: str, name: str) -> bool | None:
    """True/False for an explicit on/off setting, None for auto."""
    s = str(setting).strip().lower()
    if s in ("auto", ""):
        return None
    if s in ("on", "true", "1", "yes", "bfloat16", "bf16"):
        return True
    if s in ("off", "false", "0", "no", "float32", "fp32"):
        return False
    raise ValueError(f"{name} must be auto, on/off (or bfloat16/float32), got {setting!r}")


def resolve_cpu_settings(
    precision: str = "auto",
    channels_last: str = "auto",
    loader_workers: int = 0,
    processes_per_machine: int = 1,
    *,
    flags: set[str] | None = None,
    probe=probe_cpu,
) -> CpuSettings:
    """Decide precision, layout and threads for CPU work on this machine.

    Args:
        precision: "auto" | "float32" | "bfloat16" (``MODEL.PRECISION``).
        channels_last: "auto" | "on" | "off" (``MODEL.CHANNELS_LAST``).
        loader_workers: data-loader worker processes (they take cores from compute).
        processes_per_machine: training processes on this machine.
        flags: CPU flags (default: read from /proc/cpuinfo); for tests.
        probe: the timing probe ``probe(threads) -> dict``; for tests.
    """
    flags = cpu_flags() if flags is None else flags
    threads = compute_threads(loader_workers, processes_per_machine)
    want_bf16 = _choose(precision, "MODEL.PRECISION")
    want_cl = _choose(channels_last, "MODEL.CHANNELS_LAST")
    s = CpuSettings(threads=threads)
    reasons = []
    need_probe = (want_bf16 is None and has_bf16_flags(flags)) or want_cl is None
    # One thread: the ranking of precisions and layouts is a property of the core, and a
    # multi-thread probe on a machine that other jobs keep busy measures the contention instead
    # (2 threads under load once ranked bfloat16 2x slower on a CPU where it is 2.7x faster).
    timings = cached_probe(1, flags, probe) if need_probe else {}
    s.probe = timings

    if want_bf16 is None:
        if not has_bf16_flags(flags):
            bf16 = False
            reasons.append("float32: the CPU has no bf16 flags (amx_bf16/avx512_bf16)")
        else:
            fp32_best = min(timings["float32"], timings["float32_cl"])
            bf16_best = min(timings["bfloat16"], timings["bfloat16_cl"])
            bf16 = fp32_best / bf16_best >= _MIN_GAIN
            reasons.append(
                f"{'bfloat16' if bf16 else 'float32'}: probe {fp32_best * 1e3:.1f} ms float32 vs "
                f"{bf16_best * 1e3:.1f} ms bfloat16"
            )
    else:
        bf16 = want_bf16
        reasons.append(f"{'bfloat16' if bf16 else 'float32'}: set in the config")
    s.precision = "bfloat16" if bf16 else "float32"

    if want_cl is None:
        base = "bfloat16" if bf16 else "float32"
        cl = timings[base] / timings[f"{base}_cl"] >= _MIN_GAIN
        reasons.append(
            f"channels-last {'on' if cl else 'off'}: probe {timings[base] * 1e3:.1f} ms "
            f"contiguous vs {timings[f'{base}_cl'] * 1e3:.1f} ms channels-last"
        )
    else:
        cl = want_cl
        reasons.append(f"channels-last {'on' if cl else 'off'}: set in the config")
    s.channels_last = cl
    base = "bfloat16" if bf16 else "float32"
    pool, pool_cl = timings.get(f"pool_{base}"), timings.get(f"pool_{base}_cl")
    if want_cl is None and not cl and pool and pool_cl:
        s.pool_channels_last = pool / pool_cl >= _MIN_GAIN
        reasons.append(
            f"stem max pool {'channels-last' if s.pool_channels_last else 'contiguous'}: probe "
            f"{pool * 1e3:.2f} ms contiguous vs {pool_cl * 1e3:.2f} ms channels-last"
        )
    src = (
        "OMP_NUM_THREADS"
        if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit()
        else (
            f"{usable_cores()} usable cores, {busy_cores()} busy, {loader_workers} loader workers, "
            f"{processes_per_machine} processes"
        )
    )
    reasons.append(f"{threads} compute threads ({src})")
    s.reason = "; ".join(reasons)
    return s


def settings_from_config(
    cfg, processes_per_machine: int = 1, loader_workers: int | None = None
) -> CpuSettings:
    """:func:`resolve_cpu_settings` with the config's keys and data-loader workers.

    The environment variables ``DPSNET_PRECISION`` and ``DPSNET_CHANNELS_LAST`` (same values as
    the keys) win over the config, as ``OMP_NUM_THREADS`` wins over the thread choice: e.g. the
    test suite pins float32 so that its pinned loss values hold on every machine.
    """
    return resolve_cpu_settings(
        os.environ.get("DPSNET_PRECISION") or cfg.MODEL.PRECISION,
        os.environ.get("DPSNET_CHANNELS_LAST") or cfg.MODEL.CHANNELS_LAST,
        loader_workers=int(
            cfg.DATALOADER.NUM_WORKERS if loader_workers is None else loader_workers
        ),
        processes_per_machine=processes_per_machine,
    )


def apply_cpu_settings(model: nn.Module | None, settings: CpuSettings) -> None:
    """Set the thread count and, as chosen, bfloat16 autocast and channels-last for ``model``.

    Autocast wraps the model's whole forward (training losses and inference alike); backward
    and the optimizer step run outside it, on the float32 weights. Only the backbone (trunk and
    FPN) changes layout: its convolutions are where channels-last pays; the RoI heads work on
    flat features. A pre-hook converts the backbone's input, so the caller's tensors stay as
    they are.
    """
    torch.set_num_threads(settings.threads)
    if model is None:
        return
    if settings.precision == "bfloat16" and not getattr(model, "_dpsnet_autocast", False):
        model.forward = _autocast_forward(model.forward, model)
        model._dpsnet_autocast = True
    if settings.pool_channels_last and not settings.channels_last:
        _channels_last_stem_pool(model)
    if not settings.channels_last:
        return
    backbone = getattr(model, "backbone", None) or getattr(model, "bottom_up", None)
    if backbone is None:
        return
    backbone.to(memory_format=torch.channels_last)
    if not getattr(backbone, "_dpsnet_cl_hook", False):
        backbone.register_forward_pre_hook(
            lambda _m, args: tuple(
                a.contiguous(memory_format=torch.channels_last)
                if isinstance(a, torch.Tensor) and a.dim() == 4
                else a
                for a in args
            )
        )
        backbone._dpsnet_cl_hook = True


def _channels_last_stem_pool(model: nn.Module) -> None:
    """Run each ResNet stem's max pool in channels-last; the stem's output is contiguous again.

    Hooks only (detectron2's ``BasicStem`` is left as it is): the stem's conv output is turned
    channels-last, so its ReLU and max pool run in that layout, and the stem's output back.
    """
    from detectron2.modeling.backbone.resnet import BasicStem

    def to_cl(_m, _args, out):
        return out.contiguous(memory_format=torch.channels_last)

    def to_contiguous(_m, _args, out):
        return out.contiguous()

    for stem in model.modules():
        if isinstance(stem, BasicStem) and not getattr(stem, "_dpsnet_cl_pool", False):
            stem.conv1.register_forward_hook(to_cl)
            stem.register_forward_hook(to_contiguous)
            stem._dpsnet_cl_pool = True


def _autocast_forward(forward, model: nn.Module):
    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if model.training or torch.is_grad_enabled():
                out = forward(*args, **kwargs)
            else:
                with _bfloat16_weights(model):
                    out = forward(*args, **kwargs)
        return to_float32(out)

    return wrapped


#: Layers whose weights CPU autocast casts to bfloat16 at every call.
_CAST_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)


@contextmanager
def _bfloat16_weights(model: nn.Module):
    """Inference only: the layers autocast would cast get bfloat16 copies of their weights,
    made once and kept while the float32 weights do not change.

    Autocast's own cast cache lives for one autocast region, i.e. one forward: every image paid
    for casting all convolution weights again (about a tenth of an inference on the demo's
    ResNet-18). A copy is remade when its parameter is replaced or updated in place (its
    version counter moves: an optimizer step, a loaded checkpoint). The float32 parameters are
    back in place when the forward returns, whatever happens inside.
    """
    cache = model.__dict__.setdefault("_dpsnet_bf16_weights", {})
    swapped = []
    try:
        for mod_name, module in model.named_modules():
            if not isinstance(module, _CAST_LAYERS):
                continue
            for name in ("weight", "bias"):
                p = module._parameters.get(name)
                if p is None or p.dtype != torch.float32:
                    continue
                key = f"{mod_name}.{name}"
                entry = cache.get(key)
                if entry is None or entry[0] is not p or entry[1] != p._version:
                    entry = (p, p._version, p.detach().to(torch.bfloat16))
                    cache[key] = entry
                module._parameters[name] = entry[2]
                swapped.append((module, name, p))
        yield
    finally:
        for module, name, p in swapped:
            module._parameters[name] = p


def to_float32(obj):
    """``obj`` with every bfloat16 tensor in it (dicts, lists, Instances, Boxes) as float32.

    A model's outputs leave the autocast region in float32, so that every consumer (evaluators,
    receipts, pseudo-labels: numpy has no bfloat16) reads them as it would without autocast.
    """
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype == torch.bfloat16 else obj
    if isinstance(obj, dict):
        return {k: to_float32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_float32(v) for v in obj)
    fields = getattr(obj, "get_fields", None)  # detectron2 Instances
    if callable(fields):
        for name, value in list(fields().items()):
            obj.set(name, to_float32(value))
        return obj
    tensor = getattr(obj, "tensor", None)  # detectron2 Boxes and the like
    if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.bfloat16:
        obj.tensor = tensor.float()
    return obj


def autocast_context(settings: CpuSettings | None, device: str = "cpu"):
    """bfloat16 autocast on CPU when chosen, else a no-op context.

    Under CPU autocast, convolutions and matrix products run in bfloat16 while PyTorch's autocast
    policy keeps losses (cross-entropy, smooth L1, ...) and reductions in float32; dpsnet's
    counting view additionally casts its density map to float32 before the counting sums and
    losses, and the density targets are float32 throughout.
    """
    if settings is None or settings.precision != "bfloat16" or not str(device).startswith("cpu"):
        return nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)

"""The CPU's facts and a short timing probe, for :mod:`dpsnet.utils.precision`.

The probe runs a small conv net's forward and backward (the kind of work a ResNet trunk and FPN
do) in float32 and bfloat16 autocast, in both memory layouts, and is cached per machine (CPU
model, flags, torch version, probe shape) in ``$DPSNET_CACHE`` (default ``~/.cache/dpsnet``).
"""

import hashlib
import json
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "busy_cores",
    "cached_probe",
    "compute_threads",
    "cpu_flags",
    "has_bf16_flags",
    "probe_cpu",
    "usable_cores",
]

#: /proc/cpuinfo flags that mean the CPU has bfloat16 arithmetic (AVX-512 BF16 or AMX tiles).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
#: Probe input (batch, channels, size): a stand-in for a ResNet stage at the demo's scale.
_PROBE_SHAPE = (2, 64, 56)
#: The stem's 3x3 max pool (batch, channels, size): ResNet's first pooling at the demo's scale.
_POOL_SHAPE = (2, 64, 128)
_PROBE_REPEATS = 3
#: Bumped when the probe measures something new (older cache entries are then measured again).
_PROBE_VERSION = 2


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def has_bf16_flags(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores from /proc/stat, or None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(window: float = 0.3) -> int:
    """Cores other processes keep busy now (this process sleeps while it looks).

    Measured over ``window`` seconds from /proc/stat; the 1-minute load average lags by a
    minute, so it counted the previous stage of the same pipeline as another job. Falls back to
    the load average where /proc/stat cannot be read (0 if neither can).
    """
    first = _cpu_times()
    if first is not None:
        time.sleep(window)
        second = _cpu_times()
        if second is not None and second[1] > first[1]:
            share = (second[0] - first[0]) / (second[1] - first[1])
            return int(round(share * (os.cpu_count() or 1)))
    try:
        return int(round(os.getloadavg()[0]))
    except (AttributeError, OSError):
        return 0


def compute_threads(loader_workers: int = 0, processes_per_machine: int = 1) -> int:
    """Compute threads for this process: the free cores, or ``OMP_NUM_THREADS`` when set.

    A second thread on a core another process keeps busy made a training step 3x slower than one
    thread (REFERENCE.md), so cores already loaded (the load average, taken before this process
    starts its own work) are not counted as free.

    Args:
        loader_workers: data-loader worker processes of this process (each takes a core).
        processes_per_machine: training processes sharing this machine's cores.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = usable_cores()
    free = max(cores - busy_cores(), 1)
    share = min(cores // max(int(processes_per_machine), 1), free)
    return max(share - max(int(loader_workers), 0), 1)


class _ProbeNet(nn.Module):
    """A few conv + norm + ReLU layers: the kind of work a ResNet trunk and FPN do."""

    def __init__(self, c: int):
        super().__init__()
        layers = []
        for _ in range(3):
            layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.GroupNorm(8, c), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


def _best_time(step) -> float:
    """Best-of-N seconds of ``step()``, after one untimed warm-up call (kernel selection,
    allocation)."""
    step()
    best = float("inf")
    for _ in range(_PROBE_REPEATS):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def _time_step(net: nn.Module, x: torch.Tensor, bf16: bool) -> float:
    """Best-of-N seconds of one forward + backward."""

    def step():
        net.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            out = net(x)
        out.float().sum().backward()

    return _best_time(step)


def _time_pool(x: torch.Tensor, channels_last: bool) -> float:
    """Best-of-N seconds of the stem's max pool on contiguous ``x``, channels-last or not.

    Channels-last includes the conversions in and out (the trunk around it stays contiguous);
    a max pool is exact in either layout, so only the time differs.
    """

    def step():
        if channels_last:
            y = x.contiguous(memory_format=torch.channels_last)
            torch.nn.functional.max_pool2d(y, 3, 2, 1).contiguous()
        else:
            torch.nn.functional.max_pool2d(x, 3, 2, 1)

    return _best_time(step)


def probe_cpu(threads: int, seed: int = 0) -> dict:
    """Seconds per probe step in float32 / bfloat16 x contiguous / channels-last.

    Returns:
        {"float32": s, "bfloat16": s, "float32_cl": s, "bfloat16_cl": s, "pool_float32": s,
        "pool_bfloat16": s, "pool_float32_cl": s, "pool_bfloat16_cl": s, "seconds": total};
        the ``pool_*`` keys time the stem's max pool alone (channels-last: with its conversions).
    """
    start = time.perf_counter()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(seed)
        n, c, s = _PROBE_SHAPE
        x = torch.randn(n, c, s, s, generator=g)
        net = _ProbeNet(c)
        out = {}
        for cl in (False, True):
            net_cl = net.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            xi = x.to(memory_format=torch.channels_last) if cl else x.contiguous()
            for bf16 in (False, True):
                key = ("bfloat16" if bf16 else "float32") + ("_cl" if cl else "")
                out[key] = round(_time_step(net_cl, xi, bf16), 6)
        n, c, s = _POOL_SHAPE
        x = torch.randn(n, c, s, s, generator=g)
        for dtype in (torch.float32, torch.bfloat16):
            name = "float32" if dtype == torch.float32 else "bfloat16"
            for cl in (False, True):
                key = f"pool_{name}" + ("_cl" if cl else "")
                out[key] = round(_time_pool(x.to(dtype), cl), 6)
    finally:
        torch.set_num_threads(old)
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def _cache_file() -> Path:
    root = os.environ.get("DPSNET_CACHE") or os.path.join(Path.home(), ".cache", "dpsnet")
    return Path(root) / "cpu_probe.json"


def _cache_key(threads: int, flags: set[str]) -> str:
    text = "|".join(
        [
            _cpu_model(),
            " ".join(sorted(flags)),
            torch.__version__,
            str(threads),
            str(_PROBE_SHAPE),
            str(_POOL_SHAPE),
            str(_PROBE_VERSION),
        ]
    )
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cached_probe(threads: int, flags: set[str], probe=probe_cpu) -> dict:
    """``probe(threads)``, measured once per machine and cached (a bad cache file is ignored)."""
    path = _cache_file()
    key = _cache_key(threads, flags)
    cache = {}
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache, dict) and isinstance(cache.get(key), dict):
        return cache[key]
    result = probe(threads)
    cache = cache if isinstance(cache, dict) else {}
    cache[key] = result
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError as e:  # a read-only home must not stop training
        logger.debug("could not cache the CPU probe in %s: %s", path, e)
    return result

"""Multi-process launch for one machine or many, on GPUs (NCCL) or CPUs (gloo).

detectron2 0.6's ``engine.launch`` hard-codes NCCL and asserts CUDA, and only its own launch sets
``comm._LOCAL_PROCESS_GROUP``. This module keeps its interface and adds:

* a CPU path: ``num_gpus_per_machine`` processes over gloo when CUDA is absent (or has fewer
  devices than asked for), so multi-process training is exercised on CPU machines;
* a ``torchrun`` path: when the process was started by torchrun (``env://``), the group is
  initialised from the environment and no processes are spawned.
"""

import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm

__all__ = ["DEFAULT_TIMEOUT", "launch", "launched_by_torchrun", "pick_backend"]

DEFAULT_TIMEOUT = timedelta(minutes=30)
logger = logging.getLogger(__name__)


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun / torch.distributed.run."""
    return "TORCHELASTIC_RUN_ID" in os.environ or (
        "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ and "RANK" in os.environ
    )


def pick_backend(num_local_processes: int) -> str:
    """NCCL when every local process can have its own GPU, gloo otherwise."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= num_local_processes:
        return "nccl"
    return "gloo"


def launch(
    main_func,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args=(),
    timeout: timedelta = DEFAULT_TIMEOUT,
):
    """Run ``main_func(*args)`` in every process of a (possibly distributed) job.

    Args:
        main_func: the per-process entry point.
        num_gpus_per_machine: processes per machine (one per GPU; CPU processes without CUDA).
        num_machines: machines in the job.
        machine_rank: this machine's rank.
        dist_url: rendezvous URL, e.g. "tcp://10.0.0.1:29500"; "auto" picks a free local port
            (single machine only).
        args: arguments for ``main_func``.
        timeout: timeout of collective operations.
    """
    if launched_by_torchrun():
        _torchrun_worker(main_func, args, timeout)
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// is not a reliable init_method across machines; prefer tcp://")
    mp.spawn(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
    )


def _setup_local_group(num_per_machine: int, machine_rank: int, world_size: int) -> None:
    # detectron2's comm helpers (get_local_rank, get_local_size) rely on this group, which only
    # its own launch sets; every process must create every group, in the same order.
    num_machines = world_size // num_per_machine
    for i in range(num_machines):
        ranks = list(range(i * num_per_machine, (i + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _bind_device(backend: str, local_rank: int, num_local: int) -> None:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    else:
        # Share the machine's cores between the CPU processes instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_local))


def _distributed_worker(
    local_rank, main_func, world_size, num_per_machine, machine_rank, dist_url, args, timeout
):
    backend = pick_backend(num_per_machine)
    global_rank = machine_rank * num_per_machine + local_rank
    try:
        dist.init_process_group(
            backend=backend,
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
    except Exception:
        logger.error("Could not join the process group at %s (backend %s)", dist_url, backend)
        raise
    _setup_local_group(num_per_machine, machine_rank, world_size)
    _bind_device(backend, local_rank, num_per_machine)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def _torchrun_worker(main_func, args, timeout):
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    if world_size <= 1:
        main_func(*args)
        return
    backend = pick_backend(local_size)
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    _setup_local_group(local_size, dist.get_rank() // local_size, world_size)
    _bind_device(backend, local_rank, local_size)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()

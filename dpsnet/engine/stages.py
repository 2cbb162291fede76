"""Stages run as processes, each skipped when its command, inputs and outputs are unchanged."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from dpsnet.utils.io import atomic_write_json, load_json

__all__ = ["DEMO_STAGES", "PIPELINE_STAGES", "StageRunner", "digest", "file_key"]

REPO = Path(__file__).resolve().parents[2]
PIPELINE_STAGES = ("masks", "synthesize", "pretrain", "distill", "report")
DEMO_STAGES = ("world", *PIPELINE_STAGES)


class StageRunner:
    """Runs stage commands as subprocesses; skips a stage whose command already finished.

    Args:
        out: the output folder (holds the state file).
        env: the subprocesses' environment (None: this process's).
        rerun_from: a stage to rerun with every later one (None: only changed ones).
        stages: the stage names, in order.
        state_name: the state file under ``out``.
    """

    def __init__(
        self,
        out: Path,
        env: dict | None,
        rerun_from: str | None,
        stages: tuple[str, ...] = DEMO_STAGES,
        state_name: str = "demo_stages.json",
    ):
        self.out = Path(out)
        self.env = env
        self.stages = tuple(stages)
        self.state_file = self.out / state_name
        self.state = load_json(self.state_file) if self.state_file.is_file() else {}
        self.rerun_from = self.stages.index(rerun_from) if rerun_from else len(self.stages)
        self.changed = False

    def run(
        self, index: int, name: str, argv: list[str], outputs: list[Path], key: dict | None = None
    ) -> float:
        """Run (or skip) one stage; exits with the stage's status when it fails.

        Args:
            index: the stage's position.
            name: the stage's name.
            argv: its command.
            outputs: files it must write (a missing one reruns it).
            key: what else its result depends on (compared with the last finished run).

        Returns:
            The stage's seconds (of the run that produced its outputs).
        """
        label = f"[{index + 1}/{len(self.stages)}] {name}"
        prev = self.state.get(name)
        fresh = self.changed or index >= self.rerun_from
        if (
            not fresh
            and prev
            and prev.get("argv") == argv
            and prev.get("key") == key
            and all(Path(p).exists() for p in outputs)
        ):
            print(f"{label}: done earlier ({prev['seconds']:.0f} s), skipped", flush=True)
            return prev["seconds"]
        self.changed = True  # every later stage depends on this one's output
        print(f"{label}: {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, cwd=REPO)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"{label}: failed (exit status {proc.returncode}) after {seconds:.0f} s")
            sys.exit(proc.returncode)
        missing = [str(p) for p in outputs if not Path(p).exists()]
        if missing:
            print(f"{label}: finished but did not write {', '.join(missing)}")
            sys.exit(1)
        self.state[name] = {"argv": argv, "seconds": round(seconds, 1)}
        if key is not None:
            self.state[name]["key"] = key
        atomic_write_json(self.state_file, self.state, indent=1)
        print(f"{label}: done in {seconds:.0f} s", flush=True)
        return seconds


def file_key(path: str | os.PathLike | None) -> dict | None:
    """A file's identity for stage keys: size and modification time (None: no file)."""
    if not path or not os.path.isfile(path):
        return None
    st = os.stat(path)
    return {"file": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def digest(data) -> str:
    return hashlib.sha1(repr(data).encode()).hexdigest()[:12]

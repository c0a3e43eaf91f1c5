"""Provenance of weights files, written by the programs that train or evaluate them.

    link = weights_link("runs/teacher/teacher.pt")   # {"path": ..., "sha256": ...}
    record_meta("fold0/teacher.pt", crossval={...})  # add keys to a file's meta, atomically
    problems = provenance_problems(meta, {"teacher": Path("assets/teacher.pt")})

The trainer writes `meta["provenance"]` at export (`training_provenance`): the command line,
the hardware, the parent (`init_weights`) and teacher files by sha256, steps done and
planned, and whether the time limit ended the run. Links are by the sha256 of the whole
file, so a file whose meta is rewritten later is a different parent: crossval records a
fold's scores before the next stage of that fold reads it.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from defvos_core.model.checkpoint import atomic_torch_save, file_sha256, read_weights

SHA256_HEX = 64
_COMMAND: list[str] = []  # set_command_line: the command that started this work


def weights_link(path: str | Path | None) -> dict[str, str] | None:
    """Return {"path", "sha256"} of a weights file, or None for no file ("" or None)."""
    if not path:
        return None
    return {"path": str(path), "sha256": file_sha256(path)}


def command_line() -> str:
    """Return the command that started this work: `set_command_line`'s, else this process's.

    A process's command line is given as typed (interpreter name, `-m module`, arguments).
    """
    if _COMMAND:
        return _COMMAND[0]
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def set_command_line(command: str) -> None:
    """Record `command` as what started this process's work (a worker process of a CLI)."""
    _COMMAND[:] = [command]


def cpu_name() -> str:
    """Return the CPU's model name (/proc/cpuinfo), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def hardware(device: torch.device | str | None = None) -> dict[str, Any]:
    """Describe where this process runs: device name, torch / CUDA / Python versions, CPUs."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(device)
    else:
        name = cpu_name()
    return {"device": name, "device_type": device.type, "torch": str(torch.__version__),
            "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def code_version(repo: Path | None = None) -> dict[str, Any] | None:
    """Return {"commit", "dirty"} of the git checkout holding this package, or None."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def utc_now() -> str:
    """Return the current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def training_provenance(*, init: dict[str, str] | None, teacher: dict[str, str] | None,
                        device: torch.device, world_size: int, amp: torch.dtype | None,
                        steps_done: int,
                        steps_planned: int, time_limit_minutes: float, time_limited: bool,
                        started: str) -> dict[str, Any]:
    """Return the trainer's `meta["provenance"]` (see the module docstring)."""
    return {"command": command_line(), "code": code_version(),
            "hardware": {**hardware(device), "world_size": world_size,
                         "amp": str(amp).removeprefix("torch.") if amp else "none"},
            "init_weights": init, "teacher": teacher, "steps_done": steps_done,
            "steps_planned": steps_planned, "time_limit_minutes": time_limit_minutes,
            "time_limit_reached": time_limited, "started": started, "finished": utc_now()}


def record_meta(path: str | Path, **fields: Any) -> dict[str, Any]:
    """Add (or replace) top-level `fields` in a weights file's meta; returns the new meta.

    The file is rewritten atomically; its weights are untouched (its sha256 changes).
    """
    payload = read_weights(path)
    payload["meta"] = {**payload.get("meta", {}), **fields}
    atomic_torch_save(payload, path)
    return payload["meta"]


def provenance_problems(meta: dict[str, Any], files: dict[str, Path] | None = None
                        ) -> list[str]:
    """Check what a weights file's meta claims that can be recomputed; [] when consistent.

    files: {"teacher" | "init_weights": path of the file the link should point to}; a
    recorded link to one of those must match its sha256. Checks the fields that exist: the
    training sequences never include the held-out or validated ones, `provenance` (steps
    done = `steps`, sha256 format) and `crossval` (its validation sequences are its fold's).
    """
    from defvos_core.data.folds import fold_split

    problems = []
    data = meta.get("data", {})
    trained = set(data.get("sequences", []))
    for key in ("holdout", "validation_sequences"):
        leaked = trained & set(data.get(key, []))
        if leaked:
            problems.append(f"data.sequences include data.{key} {sorted(leaked)}")
    provenance = meta.get("provenance")
    if provenance is not None:
        if provenance.get("steps_done") != meta.get("steps"):
            problems.append(f"provenance.steps_done {provenance.get('steps_done')} != steps "
                            f"{meta.get('steps')}")
        for key in ("init_weights", "teacher"):
            link = provenance.get(key)
            if link is None:
                continue
            if len(link.get("sha256", "")) != SHA256_HEX:
                problems.append(f"provenance.{key}.sha256 is not a sha256: {link}")
            elif files and key in files and file_sha256(files[key]) != link["sha256"]:
                problems.append(f"provenance.{key}.sha256 does not match {files[key]}")
    crossval = meta.get("crossval")
    if crossval is not None:
        _, validation = fold_split(int(crossval["fold"]))
        if sorted(crossval.get("validation_sequences", [])) != sorted(validation):
            problems.append(f"crossval.validation_sequences are not fold {crossval['fold']}'s")
        leaked = trained & set(validation)
        if leaked:
            problems.append(f"trained on fold {crossval['fold']}'s validation {sorted(leaked)}")
    return problems

"""Inference settings compared by cross-validation: every setting on every fold's own weights.

A sweep file (YAML) lists the settings, one row each, as `--tracker` overrides (tracker
fields, or "model.<field>" for the weights' parameter-free model settings):

    settings:
      - ""                          # the defaults: the reference row
      - size=360
      - mem_every=2 max_memory_frames=12
      - model.sample_grid=[4,8]

`sweep_folds` scores each row with `evaluate_folds` (each fold's weights on its own six
videos) and `sweep_table` prints J&F mean ± std over the folds, its change against the
reference row, and ms/frame on the machine that ran it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable

import yaml

from defvos_core.training.crossval import evaluate_folds
from defvos_core.training.provenance import command_line, hardware, utc_now

SWEEP_FORMAT = "defvos-inference-sweep-1"


def read_sweep(path: Path) -> list[list[str]]:
    """Return the rows of a sweep file, each a list of overrides; the first is the reference."""
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the sweep ({error})") from error
    rows = loaded.get("settings") if isinstance(loaded, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, str) for r in rows):
        raise ValueError(f"{path}: expected 'settings:' with a list of override strings")
    return [shlex.split(row) for row in rows]


def sweep_folds(directory: Path, stage: str, folds: list[int], rows: list[list[str]],
                base: list[str] | None = None, device: str = "cpu", max_frames: int = 0,
                data: Path | None = None,
                log: Callable[[str], None] | None = None,
                on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Score every row (after the `base` overrides) on every fold; returns the report.

    on_row: called with the report so far after each row (e.g. to save it as it grows).
    """
    report = {"format": SWEEP_FORMAT, "directory": str(directory), "stage": stage,
              "folds": folds, "base": list(base or []), "max_frames": max_frames,
              "command": command_line(), "hardware": hardware(device), "finished": None,
              "rows": []}
    for row in rows:
        if log is not None:
            log(f"sweep: {' '.join(row) or 'defaults'}")
        scored = evaluate_folds(directory, stage, folds, list(base or []) + row, device,
                                max_frames, data)
        report["rows"].append({"setting": row, "summary": scored["summary"],
                               "folds": [{key: record[key] for key in
                                          ("fold", "J&F", "ms_per_frame", "sha256")}
                                         for record in scored["folds"]]})
        if on_row is not None and len(report["rows"]) < len(rows):
            on_row(report)
    report["finished"] = utc_now()
    return report


def sweep_table(report: dict[str, Any]) -> str:
    """Markdown table of a sweep report (J&F change against the first row)."""
    reference = report["rows"][0]["summary"]["J&F"]["mean"]
    frames = f"first {report['max_frames']} frames" if report["max_frames"] else "all frames"
    base = f", base: {' '.join(report['base'])}" if report["base"] else ""
    lines = [f"folds {report['folds']}, stage {report['stage']}, {frames} of each video{base}; "
             f"{report['hardware'].get('device', '')}",
             "",
             "| setting | J&F mean ± std | Δ J&F | ms/frame |",
             "|---|---|---|---|"]
    for row in report["rows"]:
        jf, ms = row["summary"]["J&F"], row["summary"]["ms_per_frame"]
        std = "n/a" if jf["std"] is None else f"{jf['std']:.3f}"
        lines.append(f"| {' '.join(row['setting']) or 'defaults'} | {jf['mean']:.3f} ± {std} "
                     f"| {jf['mean'] - reference:+.3f} | {ms['mean']:.1f} |")
    return "\n".join(lines) + "\n"

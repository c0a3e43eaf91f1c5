"""Table of an ablation: one row per trained variant (weights meta + held-out evaluation).

    python -m defvos_core.training.ablation_report --runs RUNS --variants a b c \
        [--markdown table.md] [--json table.json]

Each variant is the folder RUNS/<variant> holding `student.pt` (the exported weights: steps,
training seconds, the config) and `eval.json` (`defvos_core.evaluate --json`). A variant
whose files are missing is listed as failed, never dropped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from defvos_core.model.checkpoint import weights_meta

TERMS = ("attention", "intra", "inter", "supervised")


def variant_row(run_dir: Path) -> dict[str, Any]:
    """Read one variant's weights meta and evaluation into a flat row."""
    row: dict[str, Any] = {"variant": run_dir.name}
    try:
        meta = weights_meta(run_dir / "student.pt")
        summary = json.loads((run_dir / "eval.json").read_text())
    except (FileNotFoundError, ValueError) as error:
        row["error"] = str(error)
        return row
    config = meta.get("config", {})
    distill = config.get("distill", {})
    row["stage"] = meta.get("stage")
    row["terms"] = "supervised only" if meta.get("stage") == "teacher" else (
        "teacher targets only (self-supervised)" if distill.get("self_supervised") else
        " + ".join(term for term in TERMS if distill.get(term, 0.0)) or "none")
    row["steps"] = meta.get("steps")
    row["planned_steps"] = config.get("steps")
    row["train_seconds"] = meta.get("train_seconds")
    row["J&F"] = summary["J&F-Mean"]
    row["J"] = summary["J-Mean"]
    row["F"] = summary["F-Mean"]
    row["sequences"] = {name: values["J&F"] for name, values in summary["sequences"].items()}
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Render the rows as a Markdown table (per-sequence J&F in the last column)."""
    lines = ["| variant | terms | steps | train s | held-out J&F | J | F | per sequence |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['variant']} | failed: {row['error']} | | | | | | |")
            continue
        steps = f"{row['steps']}" if row["steps"] == row["planned_steps"] \
            else f"{row['steps']} of {row['planned_steps']} (time limit)"
        seconds = "" if row["train_seconds"] is None else f"{row['train_seconds']:.0f}"
        sequences = " / ".join(f"{name} {value:.3f}" for name, value in row["sequences"].items())
        lines.append(f"| {row['variant']} | {row['terms']} | {steps} | {seconds} | "
                     f"{row['J&F']:.3f} | {row['J']:.3f} | {row['F']:.3f} | {sequences} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m defvos_core.training.ablation_report",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of the variants")
    parser.add_argument("--variants", nargs="+", required=True, help="variant folder names")
    parser.add_argument("--markdown", type=Path, help="write the table here too")
    parser.add_argument("--json", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    rows = [variant_row(args.runs / name) for name in args.variants]
    table = markdown_table(rows)
    print(table, end="")
    if args.markdown is not None:
        args.markdown.write_text(table)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

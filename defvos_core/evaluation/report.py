"""Human-readable reports of a `summarize` result: a text table and a per-sequence bar chart."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_OVERALL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def format_table(summary: dict) -> str:
    """Plain-text table: one row per sequence (objects, J&F, J-Mean, F-Mean), then overall."""
    sequences = summary["sequences"]
    name_width = max([len("Sequence")] + [len(name) for name in sequences])
    lines = [f"{'Sequence':<{name_width}}  Objects     J&F  J-Mean  F-Mean"]
    for name, row in sequences.items():
        lines.append(
            f"{name:<{name_width}}  {len(row['objects']):>7d}  {row['J&F']:6.3f}  "
            f"{row['J-Mean']:6.3f}  {row['F-Mean']:6.3f}"
        )
    lines.append("")
    lines.append(f"Overall ({summary['n_objects']} objects in {len(sequences)} sequences)")
    lines.append("  ".join(f"{key:>8}" for key in _OVERALL_KEYS))
    lines.append("  ".join(f"{summary[key]:8.3f}" for key in _OVERALL_KEYS))
    return "\n".join(lines)


def plot_per_sequence(summary: dict, png_path: str | Path) -> None:
    """Save a bar chart of each sequence's J&F (with the overall J&F-Mean as a line) as PNG."""
    names = list(summary["sequences"])
    scores = [summary["sequences"][name]["J&F"] for name in names]
    figure = Figure(figsize=(max(4.0, 0.35 * len(names) + 1.5), 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.bar(range(len(names)), scores, color="tab:blue")
    axes.axhline(summary["J&F-Mean"], color="tab:red", linestyle="--",
                 label=f"J&F-Mean {summary['J&F-Mean']:.3f}")
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("J&F")
    axes.set_title("Per-sequence J&F")
    axes.legend(loc="best")
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, format="png", dpi=100)

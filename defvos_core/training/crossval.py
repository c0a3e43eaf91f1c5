"""Cross-validation over the five fixed DAVIS folds: train a recipe per fold, score, summarise.

    recipe = load_recipe("config/training/recipes/teacher_cv.yaml")
    report = run_crossval(recipe, CrossvalOptions(out=Path("runs/cv")))  # + crossval.json

For fold k every stage trains with `data.split=train-foldK`, `validation.split=foldK`,
`data.holdout=[]` (24 sequences; the fold's 6 are excluded by the trainer), chained by the
recipe's `init` / `teacher` links to the same fold's earlier stages only; its weights go to
OUT/foldK/<stage>.pt and are scored on the fold's 6 videos (DAVIS protocol,
`score_sequences`) before a later stage reads them; the scores are written into the
weights' meta (`crossval`) and OUT/foldK/<stage>.json. OUT/crossval.json holds every fold,
per-stage mean and sample standard deviation over the folds, the configs, the commands and
the seconds; OUT/crossval.md the table. A final recipe (`final: true`) trains the same
chain once on all 30 sequences into OUT/final/ (nothing is left to validate on).
`evaluate_folds` re-scores every fold's weights with other tracker settings.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from defvos_core.config import TrackerConfig
from defvos_core.config_io import from_dict, load_config, parse_overrides, to_dict
from defvos_core.data.folds import fold_split
from defvos_core.data.roots import DAVIS_NAME, DUTS_NAME, ECSSD_NAME
from defvos_core.training.config import TrainConfig, load_train_config
from defvos_core.training.provenance import (command_line, file_sha256, hardware,
                                             record_meta, set_command_line, utc_now)
from defvos_core.training.recipes import Recipe, StageSpec, resolve_config_path

CROSSVAL_FORMAT = "defvos-crossval-v1"
STD_KIND = "sample standard deviation over folds (n - 1); null for one fold"
PROTOCOL = "DAVIS semi-supervised J&F (first frame seeded), the fold's validation videos"
LOG = logging.getLogger("defvos.crossval")


@dataclass
class CrossvalOptions:
    """Where a cross-validation run writes and reads, and what it adds to every stage."""

    out: Path
    data: Path | None = None  # folder of davis2016-train-240p/ and ecssd/; None: $DEFVOS_DATA
    overrides: list[str] = field(default_factory=list)  # after the recipe's
    resume: bool = False  # skip finished stages, continue unfinished ones from checkpoints
    command: str = ""  # the command line recorded in the report


def fold_name(fold: int | None) -> str:
    """Return the folder name of a fold ("fold3") or of the final run ("final")."""
    return "final" if fold is None else f"fold{fold}"


def stage_overrides(recipe: Recipe, stage: StageSpec, fold: int | None,
                    options: CrossvalOptions) -> list[str]:
    """All --set values of one stage in one fold: recipe, stage, options, then the fold's."""
    folder = options.out / fold_name(fold)
    forced = [f"run_dir={folder / stage.name}", f"export.weights={folder / stage.name}.pt",
              "validation.enabled=false", "data.holdout=[]"]
    if fold is None:
        forced += ["data.split=train", "validation.split=", "validation.sequences=[]"]
    else:
        forced += [f"data.split=train-fold{fold}", f"validation.split=fold{fold}"]
    if options.data is not None:
        # the still folders present (a packed .device_data/ carries ECSSD only)
        stills = ",".join(str(options.data / name) for name in (ECSSD_NAME, DUTS_NAME)
                          if (options.data / name).is_dir())
        forced += [f"data.root={options.data / DAVIS_NAME}", f"data.static.roots=[{stills}]"]
    if stage.init:
        forced.append(f"init_weights={folder / stage.init}.pt")
    if stage.teacher:
        forced.append(f"distill.teacher_weights={folder / stage.teacher}.pt")
    return [*recipe.overrides, *stage.overrides, *options.overrides, *forced]


def stage_config(recipe: Recipe, stage: StageSpec, fold: int | None,
                 options: CrossvalOptions) -> TrainConfig:
    """Resolve one stage's training config; refuse anything from outside the fold."""
    config = load_train_config(resolve_config_path(stage.config),
                               stage_overrides(recipe, stage, fold, options))
    if fold is not None:
        _, validation = fold_split(fold)
        if config.init_weights and not stage.init:
            raise ValueError(f"stage {stage.name}: init_weights {config.init_weights} comes "
                             f"from outside fold {fold} (it may have seen its validation "
                             f"videos); start from an earlier stage (`init:`)")
        if config.stage == "student" and not stage.teacher:
            raise ValueError(f"stage {stage.name}: a student stage needs `teacher:` naming an "
                             f"earlier stage of the fold (another teacher may have seen fold "
                             f"{fold}'s validation videos)")
        kept = [name for name in config.data.sequences if name not in validation]
        if config.data.sequences and not kept:
            raise ValueError(f"stage {stage.name}: data.sequences {config.data.sequences} "
                             f"are all fold {fold}'s validation sequences")
        config.data.sequences = kept
    return config


def train_command(stage: StageSpec, overrides: list[str]) -> str:
    """Return the `python -m defvos_core.train` command equivalent to one stage of a fold."""
    words = ["python", "-m", "defvos_core.train", "--config", stage.config]
    for value in overrides:
        words += ["--set", value]
    return shlex.join(words)


def score_weights(weights: Path, root: Path, names: list[str], tracker_config: TrackerConfig,
                  max_frames: int = 0, resolution: str = "240p",
                  model_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score a weights file on DAVIS-layout sequences; J&F, J, F, per sequence and ms/frame.

    ms/frame times the tracker's calls only (seeding included), not reading or scoring.
    model_overrides: parameter-free model settings run instead of the weights' own
    (`defvos_core.model.checkpoint.load_model`).
    """
    from defvos_core.build import build_tracker
    from defvos_core.data.splits import read_named_sequences
    from defvos_core.evaluation.metrics import summarize
    from defvos_core.evaluation.tracking import score_sequences

    tracker = _TimedTracker(build_tracker(weights, tracker_config, model_overrides))
    started = time.perf_counter()
    sequences = read_named_sequences(root, names, resolution)
    results = score_sequences(tracker, sequences, max_frames)  # type: ignore[arg-type]
    summary = summarize(results)
    times = tracker.seconds
    return {"J&F": summary["J&F-Mean"], "J": summary["J-Mean"], "F": summary["F-Mean"],
            "sequences": {name: row["J&F"] for name, row in summary["sequences"].items()},
            "frames": len(times), "ms_per_frame": 1000 * statistics.fmean(times),
            "ms_per_frame_median": 1000 * statistics.median(times),
            "eval_seconds": round(time.perf_counter() - started, 1),
            "tracker": to_dict(tracker_config), "model_overrides": model_overrides or {},
            "max_frames": max_frames}


class _TimedTracker:
    """A tracker whose `add_objects` / `step` calls are timed (seconds per call)."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.seconds: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tracker, name)

    def _timed(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = method(*args, **kwargs)
        self.seconds.append(time.perf_counter() - started)
        return result

    def add_objects(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self.tracker.add_objects, *args, **kwargs)

    def step(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self.tracker.step, *args, **kwargs)


def run_stage(recipe: Recipe, stage: StageSpec, fold: int | None,
              options: CrossvalOptions) -> dict[str, Any]:
    """Train (or, resumed, reuse) one stage of a fold, score it, record it; returns its row."""
    from defvos_core.model.checkpoint import weights_meta
    from defvos_core.training.trainer import Trainer, data_root

    folder = options.out / fold_name(fold)
    record_path = folder / f"{stage.name}.json"
    if options.resume and record_path.is_file():
        LOG.info(f"{fold_name(fold)}/{stage.name}: done before, kept")
        return json.loads(record_path.read_text())
    overrides = stage_overrides(recipe, stage, fold, options)
    config = stage_config(recipe, stage, fold, options)
    LOG.info(f"{fold_name(fold)}/{stage.name}: training ({stage.config})")
    trainer = Trainer(config, resume=options.resume)
    try:
        summary = trainer.run()
    finally:
        trainer.close()
    device = str(trainer.device)
    weights = Path(summary["weights"])
    meta = weights_meta(weights)
    trained = meta["data"]["sequences"]
    row: dict[str, Any] = {
        "stage": stage.name, "config": stage.config, "weights": str(weights),
        "init": stage.init, "teacher": stage.teacher, "train_sequences": trained,
        "steps": meta["steps"], "steps_planned": config.steps,
        "time_limited": summary["time_limited"], "train_seconds": summary["train_seconds"],
        "distill": to_dict(config.distill) if config.stage == "student" else None,
        "overrides": overrides, "command": train_command(stage, overrides)}
    if fold is not None:
        _, validation = fold_split(fold)
        leaked = sorted(set(trained) & set(validation))
        if leaked:
            raise RuntimeError(f"{weights}: trained on fold {fold}'s validation {leaked}")
        row["validation_sequences"] = validation
        if stage.score:
            tracker_config = TrackerConfig(size=config.validation.size, device=device)
            scores = score_weights(weights, data_root(config), validation, tracker_config,
                                   config.validation.max_frames, config.data.resolution)
            row.update(scores)
            record_meta(weights, crossval={
                "fold": fold, "validation_sequences": validation, "protocol": PROTOCOL,
                "command": options.command or command_line(), "scored": utc_now(),
                **{key: scores[key] for key in ("J&F", "J", "F", "sequences", "frames",
                                                "tracker", "max_frames")}})
            LOG.info(f"{fold_name(fold)}/{stage.name}: J&F {scores['J&F']:.4f} on "
                     f"{validation}")
    row["sha256"] = file_sha256(weights)
    _write_json(record_path, row)
    return row


def run_fold(recipe: Recipe, fold: int | None, options: CrossvalOptions) -> dict[str, Any]:
    """Run every stage of one fold in order; write OUT/<fold>/fold.json; return it."""
    folder = options.out / fold_name(fold)
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("defvos").addHandler(handler)
    started = time.perf_counter()
    try:
        stages = {stage.name: run_stage(recipe, stage, fold, options)
                  for stage in recipe.stages}
    finally:
        logging.getLogger("defvos").removeHandler(handler)
        handler.close()
    record = {"fold": fold, "seconds": round(time.perf_counter() - started, 1),
              "stages": stages}
    if fold is not None:
        record["validation_sequences"] = fold_split(fold)[1]
    _write_json(folder / "fold.json", record)
    return record


def configure_logging() -> None:
    """Log this module's progress and every warning to stdout; training logs go to the folds'.

    Each fold's stages log in full to OUT/<fold>/log.txt (`run_fold`).
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(lambda record: record.name.startswith(LOG.name)
                      or record.levelno >= logging.WARNING)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", handlers=[handler], force=True)


def _fold_process(recipe: dict[str, Any], fold: int | None, options: CrossvalOptions) -> None:
    """Entry of a spawned fold process (parallel folds)."""
    configure_logging()
    set_command_line(options.command)
    run_fold(from_dict(Recipe, recipe), fold, options)


def _run_folds(recipe: Recipe, folds: list[int | None], options: CrossvalOptions
               ) -> list[dict[str, Any]]:
    """Run the folds, `recipe.parallel` at a time; a failed fold becomes {"fold", "error"}."""
    if recipe.parallel <= 1 or len(folds) <= 1:
        records = []
        for fold in folds:
            try:
                records.append(run_fold(recipe, fold, options))
            except Exception as error:  # report the fold as failed, run the others
                LOG.exception(f"{fold_name(fold)} failed")
                records.append({"fold": fold, "error": f"{type(error).__name__}: {error}"})
        return records
    context = multiprocessing.get_context("spawn")
    pending, running, codes = list(folds), {}, {}
    while pending or running:
        while pending and len(running) < recipe.parallel:
            fold = pending.pop(0)
            process = context.Process(target=_fold_process, name=fold_name(fold),
                                      args=(to_dict(recipe), fold, options))
            process.start()
            running[fold] = process
            LOG.info(f"{fold_name(fold)}: started (process {process.pid})")
        time.sleep(0.5)
        for fold, process in list(running.items()):
            if not process.is_alive():
                process.join()
                codes[fold] = process.exitcode
                del running[fold]
    records = []
    for fold in folds:
        path = options.out / fold_name(fold) / "fold.json"
        if codes[fold] == 0 and path.is_file():
            records.append(json.loads(path.read_text()))
        else:
            records.append({"fold": fold, "error": f"fold process exited with {codes[fold]}; "
                                                   f"see {path.parent / 'log.txt'}"})
    return records


def fold_statistics(values: list[float]) -> dict[str, Any]:
    """Return mean, sample std (None for one value), n and the values of per-fold scores."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "per_fold": values}


def summarize_folds(recipe: Recipe, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: J&F, J, F and ms/frame over the folds that finished (mean, std, n)."""
    done = [record for record in records if "error" not in record]
    summary = {}
    for stage in recipe.stages:
        rows = [record["stages"][stage.name] for record in done
                if "J&F" in record["stages"].get(stage.name, {})]
        if not rows:
            continue
        summary[stage.name] = {key: fold_statistics([row[key] for row in rows])
                               for key in ("J&F", "J", "F", "ms_per_frame")}
        summary[stage.name]["folds"] = [record["fold"] for record in done
                                        if stage.name in record["stages"]]
        summary[stage.name]["time_limited_folds"] = sum(row["time_limited"] for row in rows)
    return summary


def markdown_table(report: dict[str, Any]) -> str:
    """Render a crossval report as a Markdown table, one row per scored stage."""
    lines = ["| stage | J&F mean ± std | J | F | J&F per fold | steps | time-limited |",
             "|---|---|---|---|---|---|---|"]
    done = [record for record in report["folds"] if "error" not in record]
    for name, stats in report["summary"].items():
        steps = sorted({record["stages"][name]["steps"] for record in done})
        per_fold = " / ".join(f"{fold}: {value:.3f}" for fold, value
                              in zip(stats["folds"], stats["J&F"]["per_fold"]))
        std = "–" if stats["J&F"]["std"] is None else f"{stats['J&F']['std']:.3f}"
        lines.append(f"| {name} | {stats['J&F']['mean']:.3f} ± {std} | "
                     f"{stats['J']['mean']:.3f} | {stats['F']['mean']:.3f} | {per_fold} | "
                     f"{steps[0]}–{steps[-1]} | {stats['time_limited_folds']} of "
                     f"{stats['J&F']['n']} |")
    for record in report["folds"]:
        if "error" in record:
            error = record["error"].splitlines()[0][:200]
            lines.append(f"| {fold_name(record['fold'])} | failed: {error} | | | | | |")
    return "\n".join(lines) + "\n"


def run_crossval(recipe: Recipe, options: CrossvalOptions) -> dict[str, Any]:
    """Run a recipe over its folds (or once, final); write and return the report."""
    folds: list[int | None] = [None] if recipe.final else list(recipe.folds)
    if not options.resume:
        existing = [fold_name(f) for f in folds if (options.out / fold_name(f)).exists()]
        if existing:
            raise FileExistsError(f"{options.out}: {existing} exist; pass --resume to "
                                  f"continue them, or another --out")
    for fold in folds:  # bad configs fail here, before any training
        for stage in recipe.stages:
            stage_config(recipe, stage, fold, options)
    options.out.mkdir(parents=True, exist_ok=True)
    options.command = options.command or command_line()
    started = time.perf_counter()
    records = _run_folds(recipe, folds, options)
    import torch

    report = {"format": CROSSVAL_FORMAT, "recipe": to_dict(recipe),
              "command": options.command or command_line(), "finished": utc_now(),
              "hardware": hardware("cuda" if torch.cuda.is_available() else "cpu"),
              "seconds": round(time.perf_counter() - started, 1), "std": STD_KIND,
              "protocol": PROTOCOL, "folds": records,
              "summary": {} if recipe.final else summarize_folds(recipe, records)}
    name = "final" if recipe.final else "crossval"
    _write_json(options.out / f"{name}.json", report)
    if not recipe.final:
        (options.out / "crossval.md").write_text(markdown_table(report))
    return report


MODEL_PREFIX = "model."  # an evaluate_folds override of the weights' model settings


def evaluate_folds(directory: Path, stage: str, folds: list[int],
                   tracker_overrides: list[str], device: str = "cpu", max_frames: int = 0,
                   data: Path | None = None) -> dict[str, Any]:
    """Score each fold's own weights (DIR/foldK/<stage>.pt) on its validation videos.

    `tracker_overrides` (e.g. ["size=360", "mem_every=3"]) set the tracker, and those named
    "model.<field>" (e.g. "model.sample_grid=[4,8]") the weights' parameter-free model
    settings; the report holds per-fold J&F and ms/frame and their mean and sample std over
    the folds.
    """
    from defvos_core.data.roots import default_davis_root
    from defvos_core.model.checkpoint import weights_meta

    root = data / DAVIS_NAME if data is not None else default_davis_root()
    model_overrides = parse_overrides([item[len(MODEL_PREFIX):] for item in tracker_overrides
                                       if item.startswith(MODEL_PREFIX)])
    tracker_config = load_config(TrackerConfig, None,
                                 [item for item in tracker_overrides
                                  if not item.startswith(MODEL_PREFIX)],
                                 TrackerConfig(device=device))
    records = []
    for fold in folds:
        weights = directory / fold_name(fold) / f"{stage}.pt"
        _, validation = fold_split(fold)
        meta = weights_meta(weights)
        leaked = sorted(set(meta.get("data", {}).get("sequences", [])) & set(validation))
        recorded = meta.get("crossval", {}).get("fold", fold)
        if leaked or recorded != fold:
            raise ValueError(f"{weights}: not fold {fold}'s weights (trained on {leaked}, "
                             f"recorded fold {recorded})")
        LOG.info(f"{fold_name(fold)}: scoring {weights}")
        scores = score_weights(weights, root, validation, tracker_config, max_frames,
                               model_overrides=model_overrides)
        records.append({"fold": fold, "weights": str(weights), "sha256": file_sha256(weights),
                        "validation_sequences": validation, **scores})
    summary = {key: fold_statistics([record[key] for record in records])
               for key in ("J&F", "J", "F", "ms_per_frame")}
    return {"format": CROSSVAL_FORMAT + "-evaluate", "directory": str(directory),
            "stage": stage, "tracker_overrides": tracker_overrides, "command": command_line(),
            "hardware": hardware(device), "finished": utc_now(), "std": STD_KIND,
            "protocol": PROTOCOL, "folds": records, "summary": summary}


def _write_json(path: Path, value: Any) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n")
    temporary.replace(path)

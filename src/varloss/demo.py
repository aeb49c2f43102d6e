"""`make demo`: the quick study (every family on MNIST and Fashion-MNIST) into runs/demo.

Trains 10 small VAEs (dense, conv, ResNet, DRAW, ConvDRAW on both data sets) with one
single-threaded job per core, as `varloss study` does by default: 97 s measured on a 2-core
machine. Then prints the fit of variance loss against MSE and where the
figure, results and HTML report are.
Running it again skips the finished runs and only redraws the outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from varloss.errors import InputError
from varloss.pipelines.study import run_study, summary_lines
from varloss.report import write_report

OUT = Path("runs/demo")


def main(out: str | Path = OUT) -> int:
    """Run (or continue) the quick study into `out` and print where everything is."""
    try:
        result = run_study("quick", out, command="make demo")
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; run `make demo` again to continue the study in {out}")
        return 130
    for line in summary_lines(result):
        print(line)
    if result.rows:
        print(f"report: {write_report(out, command='make demo')}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())

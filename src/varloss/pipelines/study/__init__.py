"""The study: train a zoo of VAEs from a spec and fit variance loss against MSE across them.

It reproduces the seed's central evidence: across many VAEs (dense, convolutional, ResNet-like,
iterative DRAW-like) the variance loss var(x) - var(x_hat) of the reconstructions lies close to
their MSE. Modules, in the order a study uses them:

- `spec`: YAML (a preset or a file) -> `StudySpec` of `RunSpec`s, checked by `TrainConfig`'s rules;
- `executors`: `execute_run` (one run = one `varloss train` run folder) and the registry of
  executors (`local` in this process or worker processes, `dask`);
- `results`: each finished run's results row (`varloss.records.ResultsRow`), `StudyResult`, the
  summary printed at the end;
- `fit`: fit.json (`varloss.records.FitRecord`) from the rows, through the study maths of the
  library: `varloss.variance.fit` (least squares with bootstrap intervals) and
  `varloss.variance.ratios` (the per-family table of the ratio variance loss / MSE);
- `run`: `run_study`, which ties them together in a locked study folder.

The figure is `varloss.figures.plot_study`; the files' formats are `varloss.records`.
"""

from varloss.pipelines.study.executors import (
    EXECUTORS,
    ExecutorSettings,
    execute_run,
    register_executor,
)
from varloss.pipelines.study.fit import fit_results
from varloss.pipelines.study.results import (
    METRIC_COLUMNS,
    RESULT_COLUMNS,
    SETTING_COLUMNS,
    StudyResult,
    collect_row,
    summary_lines,
    write_results,
)
from varloss.pipelines.study.run import run_study
from varloss.pipelines.study.spec import (
    RUN_FIELDS,
    RunSpec,
    StudySpec,
    load_spec,
    parse_spec,
    preset_names,
)

__all__ = [
    "EXECUTORS",
    "METRIC_COLUMNS",
    "RESULT_COLUMNS",
    "RUN_FIELDS",
    "SETTING_COLUMNS",
    "ExecutorSettings",
    "RunSpec",
    "StudyResult",
    "StudySpec",
    "collect_row",
    "execute_run",
    "fit_results",
    "load_spec",
    "parse_spec",
    "preset_names",
    "register_executor",
    "run_study",
    "summary_lines",
    "write_results",
]

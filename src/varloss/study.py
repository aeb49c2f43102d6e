"""Deprecated: the study moved to `varloss.pipelines.study` (its figure to `varloss.figures`).

This module re-exports the old names and warns once on import.
"""

import warnings

from varloss.errors import InputError
from varloss.figures import FAMILY_COLOURS, family_colour, plot_study
from varloss.pipelines.study import (
    EXECUTORS,
    METRIC_COLUMNS,
    RESULT_COLUMNS,
    SETTING_COLUMNS,
    RunSpec,
    StudyResult,
    StudySpec,
    collect_row,
    execute_run,
    fit_line,
    fit_origin,
    fit_results,
    load_spec,
    parse_spec,
    preset_names,
    run_study,
    summary_lines,
    write_results,
)
from varloss.runs import (
    FIGURE_FILE,
    FIT_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    RUN_TIMING_FILE,
    SPEC_FILE,
)

warnings.warn(
    "varloss.study is deprecated; use varloss.pipelines.study (and varloss.figures.plot_study)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "EXECUTORS",
    "FAMILY_COLOURS",
    "FIGURE_FILE",
    "FIT_FILE",
    "METRIC_COLUMNS",
    "REPORT_FILE",
    "RESULTS_FILE",
    "RESULT_COLUMNS",
    "RUN_TIMING_FILE",
    "SETTING_COLUMNS",
    "SPEC_FILE",
    "InputError",
    "RunSpec",
    "StudyResult",
    "StudySpec",
    "collect_row",
    "execute_run",
    "family_colour",
    "fit_line",
    "fit_origin",
    "fit_results",
    "load_spec",
    "parse_spec",
    "plot_study",
    "preset_names",
    "run_study",
    "summary_lines",
    "write_results",
]

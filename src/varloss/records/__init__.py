"""The records a run folder holds, each parsed once, older files migrated in one place.

- `ReportRecord` (`read_report`): a training run's report.json.
- `ResultsRow` (`read_results`, `write_results`): a study's results.csv, one row per run.
- `FitRecord` (`read_fit`): a study's fit.json, the fits and the per-family ratio table.
- `values`: the one rule per kind of value (number, integer, flag, text, interval).

Pipelines write these records and pages and figures read them, so a value means the same to every
reader. This package sits above the libraries whose types it holds (`varloss.variance`: the
protocol, `LineFit`, `FamilyRatio`) and below the figures, pipelines and report that use it.
"""

from varloss.records.fit import FIT_LINES, FitRecord, read_fit
from varloss.records.report import (
    MEASURE_KEYS,
    ReportRecord,
    fid_number,
    read_object,
    read_report,
)
from varloss.records.results import (
    EPOCH_COLUMNS,
    METRIC_COLUMNS,
    REPORT_COLUMNS,
    RESULT_COLUMNS,
    SETTING_COLUMNS,
    SPECTRUM_COLUMNS,
    STOPPED_COLUMN,
    ResultsRow,
    read_results,
    write_results,
)

__all__ = [
    "EPOCH_COLUMNS",
    "FIT_LINES",
    "MEASURE_KEYS",
    "METRIC_COLUMNS",
    "REPORT_COLUMNS",
    "RESULT_COLUMNS",
    "SETTING_COLUMNS",
    "SPECTRUM_COLUMNS",
    "STOPPED_COLUMN",
    "FitRecord",
    "ReportRecord",
    "ResultsRow",
    "fid_number",
    "read_fit",
    "read_object",
    "read_report",
    "read_results",
    "write_results",
]

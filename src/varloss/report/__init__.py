"""The HTML report: one self-contained page per varloss output folder.

`write_report(dir)` looks at what the folder holds and writes `dir/report.html`:

- a `varloss train` run (report.json + config.json, samples.png, history.csv, maps.npz and maybe
  a `correct/` sub-folder),
- a `varloss correct` folder (report.json with `baseline` and `methods`, samples.png),
- a `varloss study` folder (results.csv, fit.json, figure.png, study.yaml, runs/),
- a `varloss measure --json` output (a JSON with `var_real`, plus maps.npz or a maps figure).

The page is built from the files the run-folder layer (`varloss.runs`) reads and checks against
the folder's manifest; nothing is recomputed and no model is run. Each section appears only
when its data exists. Figures are embedded as base64 data URIs and the CSS and the small sorting
script are inline, so the page opens offline and can be mailed as one file.

Modules: `html` (value types, formatting, rendering), `sections` (headline, FID, settings),
`plots` (figures drawn for the page), `files` (reading the folder), `kinds` (the registry of
report kinds), `pages` (one builder per kind), `render` (render_report, write_report).
"""

from varloss.report.html import Cell, Figure, Table, fmt
from varloss.report.kinds import REPORT_KINDS, ReportKind, detect_kind, register_report_kind
from varloss.report.render import render_report, write_report
from varloss.report.sections import explain_variance

__all__ = [
    "REPORT_KINDS",
    "Cell",
    "Figure",
    "ReportKind",
    "Table",
    "detect_kind",
    "explain_variance",
    "fmt",
    "register_report_kind",
    "render_report",
    "write_report",
]

"""One page builder per kind of varloss output, registered in the order they are tried: a study
folder first, then a correct folder (report.json with a baseline), a train run, and a folder or
file holding a `varloss measure --json` output."""

from varloss.report.kinds import register_report_kind
from varloss.report.pages import correct, measure, study, train

for _page in (study, correct, train, measure):
    register_report_kind(_page.KIND)

"""python -m varloss.report DIR: write DIR/report.html."""

import sys

from varloss.report import write_report

print(write_report(sys.argv[1], command="python -m varloss.report " + " ".join(sys.argv[1:])))

"""Self-contained HTML reports with PNG plots, for a training run or a whole RLHF loop.

`write_run_report(run_dir)` and `write_loop_report(loop_dir)` write `report.html` into the folder
and return its path; the file embeds its images and styles, so it opens from disk anywhere.
Nothing here imports torch: a report can be written on any machine that holds the folder.
"""

from alignloop.report.files import ReportError
from alignloop.report.loop_report import write_loop_report
from alignloop.report.run_report import write_run_report

__all__ = ["ReportError", "write_loop_report", "write_run_report"]

"""Human-readable views of a run's report.

``write_html_report(report, out_dir)`` turns the dict in ``report.json`` (or ``report.failed.json``) into one
self-contained page, ``out_dir/report.html``: charts embedded as PNG data URIs, no external resources.
"""

from edgeprune.reporting.html import REPORT_HTML, render_html, write_html_report

__all__ = ["REPORT_HTML", "render_html", "write_html_report"]

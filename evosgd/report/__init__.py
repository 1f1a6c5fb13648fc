"""Reports: figures, tables, statistics and findings of one results store, as a self-contained
``index.html`` and a ``report.md`` (``build_report``, ``report_from_store``)."""

from evosgd.report.build import build_report, report_from_store

__all__ = ["build_report", "report_from_store"]

"""The study runner behind ``python -m neoscale.run``: plan, execute, record, fit, report."""

from neoscale.runner.config import base_config
from neoscale.runner.plan import Branch, Budget, PlannedRun, format_table, make_plan, parse_budget

__all__ = ["Branch", "Budget", "PlannedRun", "base_config", "format_table", "make_plan", "parse_budget"]

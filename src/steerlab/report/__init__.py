"""Figures and a single-file HTML report for a comparison (``sl.evaluate.compare``).

    paths = sl.report.write_report(result, "out/")   # results.csv, frontier.csv, figures/, report.html
"""

from .figures import frontier_figure, layer_figure, strength_figure
from .html import page
from .report import recipe_digest, recipe_doc, render, write_report

__all__ = ["frontier_figure", "layer_figure", "page", "recipe_digest", "recipe_doc", "render", "strength_figure",
           "write_report"]

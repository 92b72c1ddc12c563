"""The papers' studies (docs/studies.md), run by the search's own machinery. Other code imports
these names from here:

- `run.py`: `run_soups_study` (the heterogeneous-soups study) and `run_methods_study` (the
  methods league), each a search with a fixed or seeded list of plans;
- `tables.py`: the study tables (WTR, mean-diff, λ sweep, league) from the trials' files;
- `report.py`: the study reports and figures;
- `geometry.py`: alignment-vector norms and angles of the family, as tables and figures.
"""

from search.studies.geometry import angles_frame, norms_frame, whole_model_summary, write_geometry
from search.studies.run import StudyError, run_methods_study, run_soups_study, soup_merge_plan, soup_points
from search.studies.tables import SoupPoint, league_table, markdown, meandiff_table, soup_rows, wtr_table

__all__ = [
    "SoupPoint", "StudyError", "angles_frame", "league_table", "markdown", "meandiff_table", "norms_frame",
    "run_methods_study", "run_soups_study", "soup_merge_plan", "soup_points", "soup_rows", "whole_model_summary",
    "write_geometry", "wtr_table",
]

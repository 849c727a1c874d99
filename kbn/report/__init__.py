"""The thesis's and the poster's tables, from a sweep's final runs or from published numbers.
The report must not train, import Keras or know how a run's files are written beyond reading them.

Everything starts from one long table of accuracies (results.LONG_COLUMNS: one accuracy, a
fraction, per dataset, arch, norm, optimizer, learning rate, seed, epoch or step, and split; a
cell's runs differ in seed, so the lr only says which rate the seeds were trained at). The package
follows the data flow: `results` reads it (run folders, or a file `kbn export` wrote) and indexes it
by cell; `stats` holds the statistics of seeds; `measures` the per-cell effects and convergence;
`tables` builds the tables; `render` prints them as text, markdown, LaTeX or tidy CSV; `findings`
checks the thesis's claims, one function per claim. `labels` names datasets and networks.

Relative improvement of adding a norm (x: accuracy % without, y: with): rel = (y - x) / (100 - x).
With several seeds, accuracies are seed means (shown mean ± sd); an effect (rel, or the difference
in points) is the mean of the per-seed effects when both arms ran the same seeds (paired), with a
Student-t 95% interval (or a bootstrap one), and Welch's interval when they did not. Verdicts read
the intervals (Holm's correction for claims over several cells). The report opens with a summary per
norm: the effect, its verdict and the convergence speed-up of every cell.

This module re-exports what the front ends use, so `from kbn import report; report.build_tables(...)`
reads as one API; the names live in the submodules.
"""

from __future__ import annotations

from kbn.core.stats import INTERVALS, Stat, compare, every_cell, rel, seeds_to_resolve
from kbn.report.document import Document, FORMATS, build, no_runs
from kbn.report.findings import findings
from kbn.report.measures import convergence
from kbn.report.render import PREAMBLE, TIDY_COLUMNS, latex_document, latex_figures, latex_text, render, render_findings
from kbn.report.results import (LONG_COLUMNS, ReportError, Results, check_epochs, collect_runs, export_long,
                                long_from_runs, normalise_long, protocol_line, read_long_csv, run_table, scan_runs)
from kbn.report.tables import Table, batch_size_tables, build_tables, rate_tables, rates_of, summary_tables

__all__ = ["FORMATS", "Document", "build", "no_runs", "INTERVALS", "LONG_COLUMNS", "PREAMBLE", "ReportError", "Results", "Stat", "TIDY_COLUMNS", "Table",
           "batch_size_tables", "build_tables", "rate_tables", "rates_of",
           "check_epochs", "collect_runs", "compare", "convergence", "every_cell", "export_long", "findings",
           "latex_document", "latex_figures", "latex_text", "long_from_runs", "normalise_long", "protocol_line", "read_long_csv",
           "rel", "render", "render_findings", "run_table", "scan_runs", "seeds_to_resolve", "summary_tables"]

"""A whole report of one source (a sweep folder or a file `kbn export` wrote): what `kbn report`
prints and writes, for a notebook too.

    >>> from kbn import report
    >>> doc = report.build("logs/smoke")
    >>> print(doc.text())                     # or doc.text("markdown"), doc.text("latex", standalone=True)
    >>> doc.write("logs/smoke/report")        # report.md and its pictures
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from kbn.core import registry
from kbn.report.findings import findings as check_findings
from kbn.report.render import latex_document, latex_figures, render, render_findings
from kbn.report.results import (ReportError, RunScan, check_epochs, long_from_runs, protocol_line, read_long_csv,
                                scan_runs)
from kbn.report.tables import batch_size_tables, build_tables, rate_tables, rates_of

FORMATS = ("text", "markdown", "latex", "csv")


@dataclasses.dataclass
class Document:
    """One source's tables and findings, and what was left out of them (`notices`, one line each).
    `facts` is what its run folders recorded about a user's components (display names, families),
    in force whenever the document renders or draws."""

    name: str  # "sweep smoke", else the folder's or the file's name
    source: str
    tables: list
    findings: list[dict]
    notices: list[str]
    protocol: dict | None
    df: pd.DataFrame  # the long-format accuracies
    runs: pd.DataFrame | None  # the run table (None from a file)
    logdir: Path | None
    facts: dict = dataclasses.field(default_factory=dict)
    other_notices: list[str] = dataclasses.field(default_factory=list)  # of the --compare-batch folder

    def text(self, fmt: str = "text", standalone: bool = False, pictures=()) -> str:
        """The tables and findings as `fmt`; LaTeX with `pictures` as figure floats, `standalone` as a
        whole document titled by the sweep's name and protocol."""
        with registry.learnt(self.facts):
            if fmt == "latex":
                figures = latex_figures(list(pictures)) if self.tables else ""
                parts = (render(self.tables, fmt) + ("\n" + figures if figures else ""),
                         render_findings(self.findings, fmt, figures=list(pictures)) if self.tables else "")
                if standalone:
                    return latex_document(f"kbn report: {self.name}", *parts, subtitle=protocol_line(self.protocol))
                return "\n".join(parts)
            out = render(self.tables, fmt)
            if fmt != "csv" and self.tables:
                out += "\n" + render_findings(self.findings, "markdown" if fmt == "markdown" else "text")
            return out

    def pictures(self, out: Path) -> list[Path]:
        """Draws the report's pictures into `out`; their paths."""
        from kbn.report import plots

        with registry.learnt(self.facts):
            return plots.plot_all(self.logdir, Path(out), self.df, self.runs)

    def markdown(self, pictures=()) -> str:
        """report.md: the tables, findings and pictures, after what was left out."""
        with registry.learnt(self.facts):
            md = [f"# kbn report: {self.source}\n", render(self.tables, "markdown"),
                  render_findings(self.findings, "markdown"), "\n## Pictures\n"]
        if self.notices:
            md[1:1] = ["Left out of this report:\n", *(f"- {n}" for n in self.notices), ""]
        from kbn.report import plots

        md += [f"![{plots.caption(p) or p.stem}]({p.name})\n" for p in pictures]  # its caption, as in LaTeX
        return "\n".join(md)

    def write(self, out: str | Path) -> tuple[Path, list[Path]]:
        """report.md and its pictures in `out`: (report.md's path, the pictures' paths)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        pictures = self.pictures(out)
        (out / "report.md").write_text(self.markdown(pictures))
        return out / "report.md", pictures


def no_runs(logdir, found: RunScan) -> str:
    """Why `found` has nothing to report, one line."""
    if not found.folders:
        return f"{logdir}: holds no kbn runs (no run folder with config.json or result.json outside search/)"
    return f"{logdir}: no finished run to report ({found.unfinished} unfinished, {len(found.skipped)} skipped)"


def scan(logdir, need_runs: bool = True) -> RunScan:
    """The final runs under `logdir`; ReportError when there are none (and `need_runs`), carrying
    in `notices` what was left out and why."""
    found = scan_runs(logdir)
    if need_runs and found.runs.empty:
        e = ReportError(no_runs(logdir, found))
        e.notices = found.notices()
        raise e
    return found


def build(logdir: str | Path | None = None, *, from_csv: str | Path | None = None, interval: str = "t",
          epochs: list[int] | None = None, compare_batch: str | Path | None = None) -> Document:
    """The report of a sweep folder (`logdir`) or of a long-format CSV (`from_csv`): the thesis's
    tables these results allow, per shared rate for a list of rates, the tuning-robustness tables of
    its search, Tables 6-7 against a second folder at another batch size (`compare_batch`), and the
    findings checked against them."""
    from kbn.report import tuning
    from kbn.core.errors import ConfigError

    if from_csv and logdir:  # one source: which numbers the tables show must not be a guess
        raise ConfigError(f"report: got both a folder ({logdir}) and --from-csv {from_csv}; give one of them")
    if not from_csv and not logdir:
        raise ConfigError("report: give a sweep folder (kbn report logs/smoke) or --from-csv FILE")
    if from_csv:
        df, runs, notices, protocol, facts = read_long_csv(from_csv), None, [], None, {}
    else:
        found = scan(logdir)
        df, runs, notices, protocol, facts = (long_from_runs(found.runs), found.runs, found.notices(),
                                              found.protocol, found.facts)
    missing = check_epochs(df, epochs)
    notices += [missing] if missing else []
    with registry.learnt(facts):
        rob = tuning.robustness(tuning.trial_points(logdir)) if logdir else None
        has_search = rob is not None and not rob.empty
        rates = rates_of(df, protocol)  # a fixed-rate sweep over several shared rates: its tables per rate
        if rates:
            tables = rate_tables(df, rates, epochs, interval, protocol)
        else:
            tables = build_tables(df, epochs, interval, protocol, extra=tuning.summary_extra(rob) if has_search else ())
        tables += tuning.tables(rob) if has_search else []
        if compare_batch:
            if runs is None:
                raise ConfigError("--compare-batch compares two sweep folders: give a folder, not --from-csv")
            other = scan(compare_batch)
            notices_other = other.notices()
            with registry.learnt(other.facts):
                tables += batch_size_tables(runs, other.runs, interval, (logdir, compare_batch))
        else:
            notices_other = []
        found_claims = check_findings(df, interval=interval) if not rates else [  # a claim per rate, from its runs alone
            {**f, "claim": f"lr {r:g}: {f['claim']}"} for r in rates
            for f in check_findings(df[df["lr"] == r], interval=interval)]
    return Document(_name(logdir, from_csv), str(from_csv or logdir), tables, found_claims, notices, protocol, df,
                    runs, Path(logdir) if logdir else None, facts, notices_other)


def _name(logdir, from_csv) -> str:
    """What a report is of: the sweep's name (sweep.json), else the folder's or the file's name."""
    if from_csv:
        return Path(from_csv).stem
    try:
        from kbn.sweep.folder import load_folder_sweep

        return f"sweep {load_folder_sweep(logdir).name}"
    except Exception:  # noqa: BLE001 - a folder of kbn train runs, or a damaged sweep.json (status names that)
        return Path(logdir).resolve().name

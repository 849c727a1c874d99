"""The tables: the answer first (a summary per norm: the effect, its verdict and the convergence
speed-up of every cell; then convergence per network), then every table of SPEC.md the results
allow, in the thesis's order (`build_tables`). A `Table` holds cells (labels, `Stat`s, `Summary`s),
the notes that say how its numbers were made, and its tidy CSV records. It decides what is in a
table: it must not know how a table is printed (text, markdown, LaTeX, CSV)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pandas as pd

from kbn.core import registry
from kbn.core.errors import ConfigError
from kbn.core.stability import OUTCOMES, RULE, summarize
from kbn.core.stats import (ADVISED_SEEDS, MARKS, METHODS, Stat, acc_stat, compare, contrast, mean_interval, signed,
                            verdict)
from kbn.report.labels import MISSING, arch_name, display_name, optimizer_name
from kbn.report.measures import (LADDER, Rung, SUMMARY_RUNG, Stability, convergence, curve_split, final_effect,
                                 last_point, mark_stability, norm_effect, poster_steps, stability, units)
from kbn.report.results import ReportError, Results, long_from_runs, protocol_line


@dataclasses.dataclass
class Table:
    """One table of the report: a title, headers and rows of cells, how its Stat cells print
    (kind), highlighted cells, footer notes and its tidy CSV records. `id` names the kind of table
    (summary, table6, ...); several tables may share one."""

    id: str
    title: str
    headers: list[str]
    rows: list[list]  # cells: str labels, Stat or Summary values, or None (missing)
    kind: str = "rel"  # how Stat cells print: rel | acc | mixed | plain
    marks: set = dataclasses.field(default_factory=set)  # (row, col) cells to highlight
    notes: list[str] = dataclasses.field(default_factory=list)
    records: list[dict] = dataclasses.field(default_factory=list)  # tidy CSV lines
    label: tuple = ()  # what sets it apart from other tables of its id (dataset, network, norm): LaTeX labels
    mark: str = ""  # the text format's mark of a highlighted cell: ▼ the smallest, ▲ the largest
    mark_what: str = ""  # which cells are highlighted, for the footer: "the 3 smallest in each column"
    keys: int = 1  # leading columns that name a row: a table split to fit a terminal repeats them


DEEP = registry.DEEP_TWINS

def _mark_extremes(table: Table, col_indices, smallest: bool, k: int = 3):
    """Highlight the k smallest (or largest) values of each column. The footer says which: a bare
    mark in a heading would be read as emphasis by markdown."""
    table.mark = "▼" if smallest else "▲"
    table.mark_what = f"the {k} {'smallest' if smallest else 'largest'} in each column"
    for c in col_indices:
        vals = [(r, row[c].value) for r, row in enumerate(table.rows) if isinstance(row[c], Stat)]
        vals.sort(key=lambda t: t[1], reverse=not smallest)
        table.marks |= {(r, c) for r, _ in vals[:k]}


def _add_records(table, dataset, arch, optimizer, norm, epoch, quantity, stat):
    """The tidy CSV lines of one cell: the value, its n, std, interval, P(improvement) and per-seed
    values (quantity `<q>_seed`, the seed in the seed column) where there are seeds."""
    if stat is None:
        return
    base = dict(table=table.id, dataset=dataset, arch=arch, optimizer=optimizer, norm=norm,
                epoch="" if epoch is None else epoch, seed="")
    if not isinstance(stat, Stat):
        table.records.append({**base, "quantity": quantity, "value": stat})
        return
    lines = [(quantity, stat.value), (f"{quantity}_n", stat.n)]
    if stat.std is not None:
        lines.append((f"{quantity}_std", stat.std))
    if stat.interval:
        lines += [(f"{quantity}_ci_low", stat.low), (f"{quantity}_ci_high", stat.high)]
    table.records += [{**base, "quantity": q, "value": round(float(v), 6)} for q, v in lines]
    if stat.seeds and (stat.n > 1 or stat.interval):
        table.records += [{**base, "seed": s, "quantity": f"{quantity}_seed", "value": round(v, 6)}
                          for s, v in sorted(stat.seeds.items())]


def _acc_cell(res, d, a, norm, opt, split, epoch):
    v = res.acc_by_seed(d, a, norm, opt, split, epoch)
    return None if not v else _acc_marked(acc_stat(list(v.values()), list(v)), res, d, a, norm, opt, epoch)


def _acc_marked(stat: Stat, res, d, a, norm, opt, x) -> Stat:
    """An arm's accuracy, marked with its runs that had not trained by `x` (kbn.core.stability)."""
    return mark_stability(stat, stability(res, d, a, norm, opt, x), arms=("none",) if norm == "none" else ("norm",))


def table1(res: Results, norm: str) -> Table | None:
    """Table 1: the norm's rel on test accuracy at each cell's last epoch, rows optimizer, columns
    dataset + network; None when no cell has both arms."""
    pairs = res.pairs()
    opts = res.present("optimizer")
    t = Table("table1", f"Table 1 — relative improvement from {norm} norm, test set, last epoch",
              ["optimizer"] + [display_name(d, a) for d, a in pairs], [], label=(norm,))
    any_value = False
    for opt in opts:
        row = [optimizer_name(opt)]
        for d, a in pairs:
            e = res.final_epoch(d, a, norm, opt, "test")
            stat = norm_effect(res, d, a, norm, opt, "test", e) if e else None
            any_value |= stat is not None
            row.append(stat)
            _add_records(t, d, a, opt, norm, None, "rel", stat)
        t.rows.append(row)
    return t if any_value else None


# extra per-cell quantities of the summary: (name, fn(dataset, arch, norm, optimizer) -> float | None[,
# what it means: a note under the summary defines the name where a cell prints it])
Extra = tuple[str, Callable[[str, str, str, str], "float | None"]] | tuple[str, Callable, str]


def ratio_text(st: Stat | None, reached: str = "") -> str:
    """A speed-up as '2.0× [1.5, 2.9]' (its interval where it has one)."""
    if st is None:
        return "not reached" if reached else MISSING
    text = f"{st.value:.1f}×" + (f" [{st.low:.1f}, {st.high:.1f}]" if st.interval else "")
    return text + (f" ({reached})" if reached else "")


def _reached(r: Rung) -> str:
    """'2 of 3 reached' where some seed of the norm did not; '' when all did."""
    n, k = len(r.norm_seed), r.reached("norm")
    return "" if k == n else f"{k} of {n} reached"


def _rung_name(q: float) -> str:
    return f"{100 * q:g} %"


def convergence_tables(res: Results, norm: str) -> list[Table]:
    """Per network: the convergence ladder (epochs, or steps, to 50/90/99/100 % of the way from chance
    to none's best, per arm, and the speed-ups in epochs and seconds), then the area under the curve."""
    out = []
    for d, a in res.all_pairs():
        split = curve_split(res, d, a)
        t = Table("convergence", f"Convergence — {display_name(d, a)}, {norm} norm vs none: {split} accuracy, time to "
                  "each share of the way from chance to none's best", ["optimizer", "of none's best", "target %",
                                                                      "epochs none", f"epochs {norm}",
                                                                      f"reached ({norm})", "speed-up",
                                                                      "speed-up (s)"], [],
                  kind="plain", label=(d, a, norm), keys=2)
        area = Table("auc", f"Area under the curve — {display_name(d, a)}, {norm} norm vs none: mean {split} "
                     "accuracy (%) over the evaluations", ["optimizer", "AUC none", f"AUC {norm}", "gain (points)"], [],
                     kind="plain", label=(d, a, norm))
        axis, skipped, ratios = "epoch", 0, []
        for opt in res.present_all("optimizer"):
            c = convergence(res, d, a, norm, opt, split)
            if c is None:
                continue
            axis, skipped = c["axis"], skipped + c["never_learned_none"]
            ratios += [st for r in c["rungs"] for st in (r.speedup, r.speedup_seconds) if st is not None]
            for r in c["rungs"]:
                n = len(r.none_seed)
                med = {arm: r.median(arm) for arm in ("none", "norm")}
                t.rows.append([optimizer_name(opt), _rung_name(r.q), f"{r.target:.2f}" if n else MISSING,
                               _num(med["none"]), _num(med["norm"]) if med["norm"] is not None else "not reached",
                               f"{r.reached('norm')} of {n}", ratio_text(r.speedup, _reached(r)),
                               ratio_text(r.speedup_seconds) if r.speedup_seconds else MISSING])
            area.rows.append([optimizer_name(opt), f"{c['auc_none']:.2f}", f"{c['auc_norm']:.2f}", c["auc_diff"]])
            _convergence_records(t, area, d, a, opt, norm, c)
        if t.rows:
            t.headers = [h.replace("epochs", "steps") if axis == "step" else h for h in t.headers]
            unit = "steps" if axis == "step" else "epochs"
            t.notes.append(f"Per seed, the target is chance + q × (none's best {split} accuracy − chance), for q = "
                           f"{', '.join(_rung_name(q) for q in LADDER)}: none's best, not its final value, so a "
                           f"baseline that collapses keeps a meaningful target. {unit} none / {unit} {norm}: the "
                           f"median over seeds of the first evaluated {axis} at which each reaches it (none always "
                           f"reaches its own best). speed-up: {unit} none ÷ {unit} {norm}, the geometric mean over the "
                           f"seeds where both reached it, with a 95% interval on the log; (s): the same in training "
                           f"seconds (the runs' recorded seconds at those {unit}; {MISSING}: no timings; "
                           f"{res.seconds_note(d, a)}).")
            if skipped:
                t.notes.append(f"{skipped} seed(s) left out: none never rose above chance, so there is no target.")
            ns = sorted({st.n for st in ratios})
            for m in sorted({st.method for st in ratios if st.method}):
                t.notes.append(f"Speed-ups (n = {'–'.join(map(str, (ns[0], ns[-1]) if len(ns) > 1 else ns))} seeds): "
                               f"{METHODS[m]}.")
            out += [t, area]
    return out


def _num(v: float | None) -> str:
    return MISSING if v is None else (f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}")


def _convergence_records(t: Table, area: Table, d, a, opt, norm, c: dict):
    """The ladder of one cell in the tidy CSV (per-seed epochs to each target included)."""
    axis = "epochs" if c["axis"] == "epoch" else "steps"
    for r in c["rungs"]:
        q = f"q{100 * r.q:g}".replace(".", "_")
        _add_records(t, d, a, opt, norm, None, f"target_{q}", round(r.target, 6))
        for arm in ("none", "norm"):
            _add_records(t, d, a, opt, norm, None, f"reached_{arm}_{q}", r.reached(arm))
            _add_records(t, d, a, opt, norm, None, f"{axis}_{arm}_{q}", r.median(arm))
            if len(r.none_seed) < 2:
                continue
            base = dict(table=t.id, dataset=d, arch=a, optimizer=opt, norm=norm, epoch="")
            t.records += [{**base, "seed": s, "quantity": f"{axis}_{arm}_{q}_seed", "value": "" if v is None else v}
                          for s, v in sorted(getattr(r, f"{arm}_seed").items())]
        _add_records(t, d, a, opt, norm, None, f"speedup_{q}", r.speedup)
        _add_records(t, d, a, opt, norm, None, f"speedup_seconds_{q}", r.speedup_seconds)
    for q in ("auc_none", "auc_norm"):
        _add_records(area, d, a, opt, norm, None, q, round(float(c[q]), 6))
    _add_records(area, d, a, opt, norm, None, "auc_diff", c["auc_diff"])


@dataclasses.dataclass
class Summary:
    """One cell of the summary: the test-accuracy difference and rel with their intervals, the
    verdict on "the norm helps" (from the difference's interval), the convergence speed-up, how the
    arms' runs ended (`stab`), and any extra quantities."""

    diff: Stat
    rel: Stat
    conv: dict | None
    extras: list[tuple[str, float]]
    stab: Stability | None = None

    @property
    def verdict(self) -> str:
        """The cell's verdict on "the norm helps", read from the difference's interval; a cell whose
        arms differ in stability has none: its difference says whether training worked, not how well."""
        if self.stab is not None and self.stab.differs:
            return UNSTABLE
        return verdict(self.diff)

    def parts(self) -> dict[str, str]:
        """The cell's quantities by name, each as text without its name: 'diff' (mark, points
        [interval]), 'rel', 'P(win)', 'speed', 'did not train', then the extras; only those it has."""
        dag = DAGGER if self.diff.unstable else ""
        out = {"diff": f"{MARKS[self.verdict]} {signed(self.diff)}{dag} pts", "rel": f"{signed(self.rel)}{dag}"}
        if self.diff.withheld:
            out["diff"] += f" ({self.diff.withheld})"
        if self.diff.n > 1 and self.diff.p_win is not None:
            out["P(win)"] = f"{self.diff.p_win:.2f}"
        if self.conv is not None:
            out["speed"] = _speed_part(self.conv).removeprefix("speed").removeprefix(":").lstrip()
        if self.stab is not None and not self.stab.clean:
            out["did not train"] = (f"none {len(self.stab.down('none'))} of {len(self.stab.none)}, "
                                    f"{self.stab.norm_name} {len(self.stab.down('norm'))} of {len(self.stab.norm)}")
        out |= {name: f"{round(value, 2) + 0.0:+.2f}" for name, value in self.extras}  # no "-0.00"
        return out

    def text(self, fmt: str) -> str:
        """The cell as one line: mark, difference in points [interval], rel [interval], P(win),
        speed-up, runs that did not train, and extras, separated by '; '."""
        def named(k, v):
            if k == "diff":
                return v
            colon = k == "did not train" or (k == "speed" and v.startswith("not reached"))
            return f"{k}{':' if colon else ''} {v}"

        return "; ".join(named(k, v) for k, v in self.parts().items())


UNSTABLE = "arms differ in stability"
DAGGER = "†"


def _speed_part(conv: dict) -> str:
    """'speed 2.0× [1.5, 2.9] (1.4× in time)' at the summary's rung, with the seeds that did not reach it."""
    r: Rung = conv["summary_rung"]
    reached = _reached(r)
    if r.speedup is None:
        return f"speed: not reached ({_rung_name(r.q)} of none's best)"
    text = f"speed {ratio_text(r.speedup)}"
    if r.speedup_seconds is not None:
        text += f" ({r.speedup_seconds.value:.1f}× in time)"
    return text + (f" ({reached})" if reached else "")


def summary_tables(res: Results, extra: list[Extra] = ()) -> list[Table]:
    """One table per norm: rows optimizer, columns dataset + network, each cell a `Summary` of the
    test accuracy at the last epoch. `extra` adds named per-cell quantities to every cell."""
    out = []
    if "none" not in res.present_all("norm"):
        return out
    for norm in [n for n in res.present_all("norm") if n != "none"]:
        pairs = res.all_pairs()
        t = Table("summary", f"Summary — does {norm} norm help? Test accuracy at the {last_point(res)}, with minus "
                  "without", ["optimizer"] + [display_name(d, a) for d, a in pairs], [], kind="summary", label=(norm,))
        for opt in res.present_all("optimizer"):
            row = [optimizer_name(opt)]
            for d, a in pairs:
                cell = _summary_cell(res, d, a, norm, opt, extra)
                row.append(cell)
                _summary_records(t, d, a, opt, norm, cell)
            t.rows.append(row)
        if t.records:
            t.notes.append("Each cell: mark, test-accuracy difference in points [95% interval], rel [interval], "
                           "P(win) = the share of seed pairs where the norm wins (ties count half), "
                           f"speed = {units(res)} for none to get {_rung_name(SUMMARY_RUNG)} of the way from chance to "
                           f"its best validation accuracy (test where no validation is recorded) ÷ {units(res)} for "
                           "the norm, "
                           "the geometric mean over seeds [95% interval] (in time: seconds, training seconds where the "
                           "runs recorded them, else wall time), and how many "
                           "runs of each arm did not train (diverged, collapsed or never learned). "
                           "✓ helps (the difference's interval is above 0), ✗ hurts (below 0), ? inconclusive "
                           f"(it holds 0), · one seed (a point estimate), {MARKS[UNSTABLE]} the arms differ in "
                           "stability (a seed trained in one arm and not in the other): no verdict on accuracy.")
            shown = {k for row in t.rows for c in row[1:] if c is not None for k, _ in c.extras}
            t.notes += [f"{name}: {meaning}." for name, _, *meaning in extra if name in shown and meaning
                        for meaning in meaning]
            out.append(t)
    return out


def _summary_cell(res: Results, d, a, norm, opt, extra) -> Summary | None:
    diff = final_effect(res, d, a, norm, opt, "diff")
    if diff is None:
        return None
    extras = [(name, v) for name, fn, *_ in extra if (v := fn(d, a, norm, opt)) is not None]
    return Summary(diff, final_effect(res, d, a, norm, opt),
                   convergence(res, d, a, norm, opt, curve_split(res, d, a)), extras, stability(res, d, a, norm, opt))


def _summary_records(t: Table, d, a, opt, norm, cell: Summary | None):
    """Tidy lines of a summary cell; verdict is 1 (helps), -1 (hurts), 0 (inconclusive), absent
    for one seed."""
    if cell is None:
        return
    _add_records(t, d, a, opt, norm, None, "diff", cell.diff)
    _add_records(t, d, a, opt, norm, None, "rel", cell.rel)
    if cell.diff.p_win is not None:
        _add_records(t, d, a, opt, norm, None, "p_improvement", round(cell.diff.p_win, 6))
    code = {"supported": 1, "contradicted": -1, "inconclusive": 0}.get(cell.verdict)
    if code is not None:
        _add_records(t, d, a, opt, norm, None, "verdict", code)
    if cell.stab is not None:
        _add_records(t, d, a, opt, norm, None, "stability_differs", int(cell.stab.differs))
        for arm, name in (("none", "none"), ("norm", norm)):
            _add_records(t, d, a, opt, name, None, "runs_not_trained", len(cell.stab.down(arm)))
    if cell.conv is not None:
        for q in ("speedup", "speedup_seconds"):
            if cell.conv[q] is not None:
                _add_records(t, d, a, opt, norm, None, q, round(cell.conv[q], 6))
    for name, value in cell.extras:
        _add_records(t, d, a, opt, norm, None, name, value)


def _per_epoch_rows(t: Table, res: Results, d: str, a: str, eps: list[int], cell, quantity: str, norm: str):
    """One row per optimizer, one column per epoch, each cell from `cell(opt, epoch)`."""
    for opt in res.present("optimizer"):
        row = [optimizer_name(opt)]
        for e in eps:
            stat = cell(opt, e)
            row.append(stat)
            _add_records(t, d, a, opt, norm, e, quantity, stat)
        t.rows.append(row)


def tables_2_5(res: Results, norm: str) -> list[Table]:
    """Tables 2–5: the norm's rel on validation accuracy per epoch, one table per (dataset,
    network); the three smallest of each column marked."""
    out = []
    for d, a in res.pairs():
        eps = res.epochs(d, a, "validation")
        t = Table("tables2-5", f"Tables 2–5 — {display_name(d, a)}: relative improvement from {norm} norm, validation, "
                  "per epoch", ["optimizer"] + [f"epoch {e}" for e in eps], [], label=(d, a, norm))
        _per_epoch_rows(t, res, d, a, eps, lambda opt, e: norm_effect(res, d, a, norm, opt, "validation", e), "rel",
                        norm)
        _mark_extremes(t, range(1, len(eps) + 1), smallest=True)
        if t.records:
            out.append(t)
    return out


def table6(res: Results) -> list[Table]:
    """Table 6: validation accuracy (%) per epoch on CIFAR-10 + CNN (else the first network), one
    table per norm, none included; the three largest of each column marked."""
    pairs = res.pairs()
    if not pairs:
        return []
    d, a = ("cifar10", "cnn") if ("cifar10", "cnn") in pairs else pairs[0]
    eps = res.epochs(d, a, "validation")
    out = []
    for norm in res.present("norm"):
        arm = "without normalization" if norm == "none" else f"with {norm} norm"
        t = Table("table6", f"Table 6 — {display_name(d, a)} {arm}: validation accuracy (%) per epoch",
                  ["optimizer"] + [f"epoch {e}" for e in eps], [], kind="acc", label=(d, a, norm))
        _per_epoch_rows(t, res, d, a, eps, lambda opt, e, n=norm: _acc_cell(res, d, a, n, opt, "validation", e),
                        "accuracy", norm)
        _mark_extremes(t, range(1, len(eps) + 1), smallest=False)
        if t.records:
            out.append(t)
    return out


def tables_7_10(res: Results, norm: str) -> list[Table]:
    """Tables 7–10: the norm's validation rel per epoch on a shallow network beside its deep
    counterpart, and deep − shallow, per dataset."""
    out = []
    pairs = set(res.pairs())
    for shallow, deep in DEEP.items():
        for d in res.present("dataset"):
            if (d, shallow) not in pairs or (d, deep) not in pairs:
                continue
            eps = [e for e in res.epochs(d, shallow, "validation") if e in res.epochs(d, deep, "validation")]
            headers = ["optimizer"]
            for e in eps:
                headers += [f"{e}: {arch_name(shallow)}", f"{e}: {arch_name(deep)}", f"{e}: deep − shallow"]
            t = Table("tables7-10", f"Tables 7–10 — {display_name(d)}: relative improvement from {norm} norm, validation, "
                      f"{arch_name(shallow)} vs {arch_name(deep)}", headers, [], label=(d, shallow, deep, norm))
            for opt in res.present("optimizer"):
                row = [optimizer_name(opt)]
                for e in eps:
                    s = norm_effect(res, d, shallow, norm, opt, "validation", e)
                    p = norm_effect(res, d, deep, norm, opt, "validation", e)
                    diff = contrast(s, p, res.interval)
                    row += [s, p, diff]
                    _add_records(t, d, shallow, opt, norm, e, "rel", s)
                    _add_records(t, d, deep, opt, norm, e, "rel", p)
                    _add_records(t, d, deep, opt, norm, e, "rel_diff", diff)
                t.rows.append(row)
            if t.records:
                out.append(t)
    return out


def tables_11_12(res: Results, norm: str) -> list[Table]:
    """Tables 11–12: accuracy (%) without and with the norm, and rel, per epoch and (dataset,
    network): on test when several test epochs are recorded, else on validation."""
    out = []
    for d, a in res.pairs():
        split = "test" if res.epochs(d, a, "test") and len(res.epochs(d, a, "test")) > 1 else "validation"
        eps = res.epochs(d, a, split)
        t = Table("tables11-12", f"Tables 11–12 — {display_name(d, a)}: {split} accuracy (%) without and with {norm} norm, "
                  "and rel", ["optimizer", "row"] + [f"epoch {e}" for e in eps], [], kind="mixed", label=(d, a, norm))
        for opt in res.present("optimizer"):
            lines = {"none": [], norm: [], "rel": []}
            for e in eps:
                for n in ("none", norm):
                    stat = _acc_cell(res, d, a, n, opt, split, e)
                    lines[n].append(stat)
                    _add_records(t, d, a, opt, n, e, "accuracy", stat)
                r = norm_effect(res, d, a, norm, opt, split, e)
                lines["rel"].append(r)
                _add_records(t, d, a, opt, norm, e, "rel", r)
            for label, cells in lines.items():
                t.rows.append([optimizer_name(opt), label] + cells)
        if any(q["quantity"] == "rel" for q in t.records):
            out.append(t)
    return out


def poster_tables(res: Results) -> list[Table]:
    """The poster's tables: test accuracy (%) at the evaluated steps (`poster_steps`), rows norm, one
    table per (dataset, network, optimizer) of step-based runs."""
    df = res.by_step
    out = []
    for (d, a, opt), g in df[df["split"] == "test"].groupby(["dataset", "arch", "optimizer"]):
        steps, every = poster_steps(sorted(int(s) for s in g["step"].unique()))
        t = Table("poster", f"Poster table — {display_name(d, a)}, {optimizer_name(opt)}: test accuracy (%) every "
                  f"{every} steps", ["norm"] + [f"step {s}" for s in steps], [], kind="acc", label=(d, a, opt))
        if every != steps[0]:
            t.title += f" (and at step {', '.join(str(s) for s in steps if s % every)})"
        for norm in registry.order("norm", g["norm"]):
            row = [norm]
            for s in steps:
                part = g[(g["norm"] == norm) & (g["step"] == s)].sort_values("seed")
                v = part["accuracy"].tolist()
                stat = _acc_marked(acc_stat(v, part["seed"].tolist()), res, d, a, norm, opt, s) if v else None
                row.append(stat)
                _add_records(t, d, a, opt, norm, s, "accuracy", stat)
            t.rows.append(row)
        out.append(t)
    return out


def _batch_of(runs: pd.DataFrame, where: str) -> int:
    sizes = sorted({int(b) for b in runs["batch_size"].dropna()})
    if len(sizes) != 1:
        raise ReportError(f"{where}: its runs train at batch sizes {sizes or 'not recorded'}; the batch-size "
                          "table compares two folders of one batch size each")
    return sizes[0]


def batch_size_tables(runs_a: pd.DataFrame, runs_b: pd.DataFrame, interval: str = "t",
                      where: tuple[str, str] = ("first folder", "second folder")) -> list[Table]:
    """LayerNorm's claim (Ba et al. 2016): it is robust to the batch size where batch norm is not.
    Two run tables (two sweeps alike but for the batch size); per network and optimizer, each norm's
    test accuracy at its last evaluation at the larger and the smaller batch, and the drop from the
    larger to the smaller (points, paired by seed where both ran the same seeds: a seed gives the same
    initial weights at either batch size), then each norm's drop minus batch norm's (paired likewise)."""
    sizes = {_batch_of(runs_a, where[0]): runs_a, _batch_of(runs_b, where[1]): runs_b}
    if len(sizes) != 2:
        raise ReportError(f"{where[0]} and {where[1]}: both train at batch {next(iter(sizes))}; give two sweeps "
                          "that differ in batch size")
    (small, rs), (large, rl) = sorted((b, Results(long_from_runs(r), interval=interval)) for b, r in sizes.items())
    out = []

    def in_both(values, others):
        others = set(others)
        return [v for v in values if v in others]

    opts, norms = (in_both(rl.present_all(col), rs.present_all(col)) for col in ("optimizer", "norm"))
    for d, a in in_both(rl.all_pairs(), rs.all_pairs()):
        for opt in opts:
            t = Table("batch_size", f"Batch size — {display_name(d, a)}, {optimizer_name(opt)}: test accuracy (%) at "
                      f"batch {large} and {small}, and the drop from {large} to {small}",
                      ["norm", f"batch {large}", f"batch {small}", "drop (points)"], [], kind="rel",
                      label=(d, a, opt))
            drops = {}
            for norm in norms:
                big, little = (r.last(d, a, norm, opt, "test") for r in (rl, rs))
                if big is None or little is None:
                    continue
                xl, xs = rl.at(d, a, norm, opt, "test", *big), rs.at(d, a, norm, opt, "test", *little)
                drops[norm] = drop = compare(xs, xl, "diff", interval)  # larger minus smaller batch
                accs = [acc_stat(list(x.values()), list(x)) for x in (xl, xs)]
                t.rows.append([norm] + [f"{s.value:.2f}" + (f" ± {s.std:.2f}" if s.std is not None else "")
                                        for s in accs] + [drop])
                for b, s in zip((large, small), accs):
                    _add_records(t, d, a, opt, norm, None, f"accuracy_batch{b}", s)
                _add_records(t, d, a, opt, norm, None, "drop", drop)
            for norm in [n for n in drops if n != "batch" and "batch" in drops]:
                c = contrast(drops["batch"], drops[norm], interval)
                t.rows.append([f"{norm} − batch", "", "", c])
                _add_records(t, d, a, opt, f"{norm}-batch", None, "drop_difference", c)
            if drops:
                t.notes.append(f"drop: test accuracy at batch {large} minus at batch {small}, at each run's last "
                               f"evaluation; <norm> − batch: that norm's drop minus batch norm's (below 0: the norm "
                               f"loses less than batch norm at the small batch). Accuracies: mean ± sd over seeds.")
                t.notes += _method_notes(t)
                out.append(t)
    if not out:  # nothing to compare: no table would be a silent answer
        cells = [sorted({"-".join(map(str, k)) for k in r.df[["dataset", "arch", "norm", "optimizer"]].drop_duplicates()
                         .itertuples(index=False)}) for r in (rl, rs)]
        raise ConfigError(f"--compare-batch: {where[0]} and {where[1]} have no cell (dataset, network, norm, optimizer) "
                          f"in common ({', '.join(cells[0])} vs {', '.join(cells[1])}); give two sweeps alike but for "
                          "the batch size")
    return out


def build_tables(df: pd.DataFrame, epochs: list[int] | None = None, interval: str = "t",
                 protocol: dict | None = None, extra: list[Extra] = ()) -> list[Table]:
    """The answer first (a summary per norm, the protocol under it, then convergence speed), then
    every table of SPEC.md that the results allow, in the thesis's order. `protocol`: what
    `read_protocol` found (None for numbers read from a file)."""
    res = Results(df, epochs, interval)
    norms = [n for n in res.present("norm") if n != "none"]
    has_none = "none" in res.present("norm")
    tables: list[Table] = summary_tables(res, extra)
    for t in tables:
        t.notes.append(protocol_line(protocol))
    if "none" in res.present_all("norm"):  # step-based runs (the poster's) too
        for norm in [n for n in res.present_all("norm") if n != "none"]:
            tables += convergence_tables(res, norm)
    if has_none:
        for norm in norms:
            t1 = table1(res, norm)
            tables += [t1] if t1 else []
        for norm in norms:
            tables += tables_2_5(res, norm)
    tables += table6(res)
    if has_none:
        for norm in norms:
            tables += tables_7_10(res, norm)
        for norm in norms:
            tables += tables_11_12(res, norm)
    tables += poster_tables(res)
    stab = stability_tables(res)
    at = next((i for i, t in enumerate(tables) if t.id != "summary"), len(tables))
    tables[at:at] = stab  # with the answer: whether training worked at all comes before how fast
    for t in tables:
        if t.id == "summary" and not stab:
            t.notes.append(f"Every run trained: none diverged, collapsed or never learned ({RULE}).")
        t.notes += _stability_notes(t)
        if any(c is None for row in t.rows for c in row[1:]):
            t.notes.append(f"{MISSING}: no finished run for this cell yet (the sweep may still be running).")
        if t.kind in ("rel", "mixed", "summary"):
            t.notes.append("rel = (y − x) / (100 − x), x = accuracy (%) without the norm, y = with it.")
        t.notes += _method_notes(t)
    return tables


def rates_of(df: pd.DataFrame, protocol: dict | None) -> list[float]:
    """The shared rates of a fixed-rate sweep over a list of them (protocol fixed_lr a list), that
    its runs trained at; [] for any other results (one rate, a search, numbers from a file)."""
    listed = (protocol or {}).get("fixed_lr")
    if not isinstance(listed, list):
        return []
    return [float(r) for r in listed if (df["lr"] == float(r)).any()]


def rate_tables(df: pd.DataFrame, rates: list[float], epochs: list[int] | None = None, interval: str = "t",
                protocol: dict | None = None, extra: list[Extra] = ()) -> list[Table]:
    """A fixed-rate sweep over several shared rates: per network and optimizer, one compact table
    (rows norm, columns rate: final test accuracy) first, then every table of `build_tables` once per
    rate from that rate's runs alone, its title naming the rate (a cell's runs at one rate are its
    seeds). Tidy records name the rate in their table field (`poster@lr0.3`)."""
    per_rate = {r: df[df["lr"] == r] for r in rates}
    out = rates_tables({r: Results(g, epochs, interval) for r, g in per_rate.items()})
    for r, g in per_rate.items():
        for t in build_tables(g, epochs, interval, {**(protocol or {}), "fixed_lr": r}, extra):
            t.title, t.label = f"lr {r:g} — {t.title}", (f"lr{r:g}", *t.label)
            for rec in t.records:
                rec["table"] = f"{rec['table']}@lr{r:g}"
            out.append(t)
    return out


def rates_tables(by_rate: dict[float, Results]) -> list[Table]:
    """Per (dataset, network, optimizer): each norm's test accuracy at its last evaluation at each
    shared rate, mean with a Student-t 95% interval over seeds (cut to [0, 100]), marked † where runs
    behind it had not trained (kbn.core.stability): at which rates each norm wins."""
    rates = list(by_rate)
    keys = list(dict.fromkeys((d, a, o) for res in by_rate.values() for d, a in res.all_pairs()
                              for o in res.present_all("optimizer")))
    out = []
    for d, a, opt in keys:
        t = Table("rates", f"Rates — {display_name(d, a)}, {optimizer_name(opt)}: final test accuracy (%) at each "
                  "shared learning rate", ["norm"] + [f"lr {r:g}" for r in rates], [], kind="plain", label=(d, a, opt))
        norms = registry.order("norm", {n for res in by_rate.values() for n in res.present_all("norm")})
        for norm in norms:
            row = [norm]
            for r, res in by_rate.items():
                last = res.last(d, a, norm, opt, "test")
                x = res.at(d, a, norm, opt, "test", *last) if last else None
                stat = mean_interval(list(x.values()), list(x)) if x else None
                if stat is not None:
                    stat = _acc_marked(stat, res, d, a, norm, opt, last[1])
                    if stat.unstable:  # the same norm at another rate is another arm: say which
                        stat.unstable = [f"lr {r:g}: {phrase}" for phrase in stat.unstable]
                row.append(stat)
                _add_records(t, d, a, opt, norm, None, f"accuracy_lr{r:g}", stat)
            t.rows.append(row)
        if not any(isinstance(c, Stat) for row in t.rows for c in row[1:]):
            continue
        _mark_extremes(t, range(1, len(rates) + 1), smallest=False, k=1)  # which norm wins at each rate
        t.mark_what = "the norm with the highest mean at each rate"
        ns = sorted({c.n for row in t.rows for c in row[1:] if isinstance(c, Stat)})
        t.notes.append("Test accuracy at each run's last evaluation: mean over seeds "
                       + (f"(n = {ns[0]}) " if len(ns) == 1 else f"(n = {ns[0]}–{ns[-1]}) ")
                       + "with a Student-t 95% interval (n − 1 degrees of freedom, cut to [0, 100]); every arm "
                       "trains at the column's rate, nothing searched. The tables per rate follow.")
        t.notes += _stability_notes(t)
        if any(c is None for row in t.rows for c in row[1:]):
            t.notes.append(f"{MISSING}: no finished run for this cell yet (the sweep may still be running).")
        out.append(t)
    return out


def stability_tables(res: Results) -> list[Table]:
    """Per network, the runs that did not train (kbn.core.stability), per optimizer and norm, where any
    did: none when every run trained."""
    out = []
    for d, a in res.all_pairs():
        axis = res.axis(d, a)
        t = Table("stability", f"Stability — {display_name(d, a)}: runs that did not train (diverged, collapsed or "
                  "never learned)", ["optimizer", "norm", "seeds", "trained", "diverged", "collapsed", "never learned",
                                     "where"], [], kind="plain", label=(d, a))
        for opt in res.present_all("optimizer"):
            for norm in res.present_all("norm"):
                outs = res.outcomes(d, a, norm, opt)
                if not outs:
                    continue
                count = {k: sum(o.kind == k for o in outs.values()) for k in OUTCOMES}
                t.rows.append([optimizer_name(opt), norm, str(len(outs))] + [str(count[k]) for k in OUTCOMES]
                              + [summarize([o for o in outs.values() if o.unstable], axis, len(outs)) or MISSING])
                base = dict(table=t.id, dataset=d, arch=a, optimizer=opt, norm=norm, epoch="")
                t.records += [{**base, "seed": "", "quantity": f"{k.replace(' ', '_')}_runs", "value": count[k]}
                              for k in OUTCOMES]
                for seed, o in sorted(outs.items()):
                    t.records += [{**base, "seed": seed, "quantity": "outcome_seed", "value": o.kind}]
                    if o.fell_at is not None:
                        t.records += [{**base, "seed": seed, "quantity": "fell_at_seed", "value": o.fell_at}]
        if any(r[3] != r[2] for r in t.rows):
            t.notes.append(f"Read off each run's {'validation' if res.has(d, a, 'validation') else 'test'} accuracy "
                           f"at every evaluation: {RULE}.")
            out.append(t)
    return out


def _stability_notes(t: Table) -> list[str]:
    """The footer of a table some of whose numbers come from runs that had not trained by then."""
    stats = _stats_of(t)
    phrases = list(dict.fromkeys(p for st in stats for p in (st.unstable or [])))
    notes = []
    if phrases:
        notes.append(f"{DAGGER} includes runs that had not trained by that point (kbn.core.stability): "
                     + "; ".join(phrases) + ". A difference marked " + DAGGER + " mixes whether training worked "
                     "with how well it did.")
    if any(st.withheld for st in stats):
        notes.append("No interval where the seed pairs split by stability (some pairs trained in both arms, others "
                     "in one): the per-seed effects are of two kinds, and a t interval over their mean is not honest.")
    if any(st.bounded for st in stats):
        notes.append("Some intervals are cut at what accuracies can reach (a difference y − x within [−x, 100 − x], "
                     "rel within [−x/(100 − x), 1]): a symmetric interval would pass it.")
    return notes


def _stats_of(t: Table) -> list[Stat]:
    out = []
    for row in t.rows:
        for c in row[1:]:
            out += [c.diff, c.rel] if isinstance(c, Summary) else [c] if isinstance(c, Stat) else []
    return out


def _method_notes(t: Table) -> list[str]:
    """The footer's account of the numbers: n, how the intervals were made, whether the seeds were
    paired, and a warning when there are too few seeds for a narrow interval."""
    stats = _stats_of(t)
    if not stats:
        return []
    ns = sorted({s.n for s in stats})
    n = f"n = {ns[0]} seed{'s' if ns[0] > 1 else ''}" if len(ns) == 1 else f"n = {ns[0]}–{ns[-1]} seeds"
    if ns[-1] == 1:
        return ["one seed per cell (n = 1): every value is a point estimate, with no interval."]
    lines = []
    if t.kind in ("acc", "mixed"):
        lines.append(f"Accuracies are means ± sd over seeds ({n} per cell).")
    methods = [m for m in METHODS if any(s.method == m for s in stats)]
    if methods:
        lines += [f"Effects ({n} per cell): {METHODS[m]}." for m in methods]
    unpaired = sum(s.method in ("Welch", "unpaired bootstrap") for s in stats)
    if unpaired:
        lines.append(f"{unpaired} value(s) come from unpaired seeds: the arms were run with different seeds.")
    if any(not s.interval and s.n == 1 for s in stats):
        lines.append("Cells with one seed show a point estimate alone.")
    if methods and 1 < ns[0] < ADVISED_SEEDS:
        lines.append(f"n = {ns[0]} seeds: intervals are wide; {ADVISED_SEEDS} or more are advised.")
    if t.kind == "summary":
        lines.append("A mark reads each cell's own 95% interval; the findings below correct for testing several "
                     "cells at once (Holm).")
    return lines

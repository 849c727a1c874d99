"""Rendering: tables and findings as aligned text, markdown, LaTeX (fragments for \\input, or a
whole pdflatex document) or tidy CSV. LaTeX output is ASCII: every special is escaped and the
Unicode the reports print is typeset. It prints what the tables and findings hold: it must not
compute a number or decide what a table contains."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pandas as pd

from kbn.core.stats import MARKS
from kbn.report.labels import MISSING
from kbn.report.tables import Summary, Table


TIDY_COLUMNS = ["table", "dataset", "arch", "optimizer", "norm", "epoch", "seed", "quantity", "value"]


def format_cell(stat, kind: str, fmt: str) -> str:
    """One table cell as text: a label as it is, a missing cell as MISSING, a Summary as its line,
    an accuracy (kind 'acc') as mean ± sd, an accuracy with an interval as value [low, high], and
    any other Stat (a difference, an effect) signed: +value [+low, +high]."""
    if stat is None:
        return MISSING
    if isinstance(stat, str):
        return stat
    if isinstance(stat, Summary):
        return stat.text(fmt)
    dag = "†" if stat.unstable else ""  # runs behind it had not trained: the table's footer names them
    if kind == "acc":
        s = f"{stat.value:.2f}{dag}"
        if stat.std is not None:
            s += f" ± {stat.std:.2f}"
    else:
        f = "{:.2f}" if stat.accuracy else "{:+.2f}"
        s = f.format(_no_minus_zero(stat.value)) + dag
        if stat.interval:
            s += f" [{f.format(_no_minus_zero(stat.low))}, {f.format(_no_minus_zero(stat.high))}]"
    return s


def _no_minus_zero(v: float) -> float:
    """-0.001 prints as +0.00, not -0.00."""
    return round(v, 2) + 0.0


def _row_kind(t: Table, row: list) -> str:
    """How a row's Stats print: the table's kind; a 'mixed' table's rel rows as 'rel', the others 'acc'."""
    return ("rel" if row[1] == "rel" else "acc") if t.kind == "mixed" else t.kind


def _cells(t: Table, fmt: str) -> list[list[str]]:
    """The cells as text ('text', 'markdown'), marked ones with the table's mark or in bold."""
    rows = []
    for r, row in enumerate(t.rows):
        out = []
        for c, cell in enumerate(row):
            s = format_cell(cell, _row_kind(t, row), fmt)
            if (r, c) in t.marks:
                s = f"**{s}**" if fmt == "markdown" else f"{s} {t.mark}"
            out.append(s)
        rows.append(out)
    return rows


def _notes(t: Table, fmt: str) -> list[str]:
    """A table's footer in one format: its notes, and what its highlighted cells are (a trailing
    mark in text, bold in markdown and LaTeX)."""
    if not t.marks:
        return t.notes
    how = f"{t.mark} marks" if fmt == "text" else "Bold:"
    return t.notes + [f"{how} {t.mark_what}."]


def render(tables: list[Table], fmt: str = "text", width: int | None = None) -> str:
    """The tables in one format: 'text' (aligned, fitted to `width` columns: default the terminal's,
    kbn.core.console), 'markdown' (pipe tables), 'latex' (a float per table, with stable labels) or 'csv'
    (every table's tidy records, TIDY_COLUMNS); notes under each, a note once where tables repeat it
    (the Summary's legend under its first table, not under every norm's)."""
    from tabulate import tabulate

    from kbn.core import console

    if fmt == "csv":
        recs = [r for t in tables for r in t.records]
        return pd.DataFrame.from_records(recs, columns=TIDY_COLUMNS).to_csv(index=False)
    if not tables:
        return "No finished runs to report yet.\n"
    if fmt == "latex":
        return PREAMBLE + "\n" + "\n".join(_latex_table(t, label) for t, label in zip(tables, latex_labels(tables)))
    cols = width or console.width()
    parts, seen = [], set()
    for t in tables:
        notes = _notes(t, fmt)
        repeated = [n for n in notes if n in seen]
        notes = [n for n in notes if n not in seen]
        seen.update(notes)
        if repeated:
            notes.append(f"{'Other notes' if notes else 'Notes'} as under the tables above.")
        if fmt == "markdown":
            body = tabulate(_cells(t, fmt), headers=t.headers, tablefmt="pipe", disable_numparse=True)
            parts.append(f"### {t.title}\n\n{body}\n" + "".join(f"\n_{n}_\n" for n in notes))
        else:
            cells = _cells(t, fmt)
            body = console.table(cells, t.headers, cols, keys=max(t.keys, label_columns(cells)))
            parts.append(f"{console.wrap(t.title, cols)}\n\n{body}\n"
                         + "".join(console.wrap(n, cols, "  ", "    ") + "\n" for n in notes))
    return "\n".join(parts)


def label_columns(rows) -> int:
    """How many leading columns name a row rather than hold a number ("SGD", "batch", "rel"): a table
    split to fit a terminal repeats them all, so no block loses what its numbers are of. The last
    column is never a label."""
    def is_label(cell) -> bool:
        text = str(cell).strip()
        return text in ("", "—") or not (text[0].isdigit() or text[0] in "+-−[.⚠✓✗?▲▼†")

    width = min((len(r) for r in rows), default=0)
    n = 0
    while n < width - 1 and all(is_label(r[n]) for r in rows) and any(str(r[n]).strip() not in ("", "—") for r in rows):
        n += 1
    return max(n, 1)


# What a document that \input's the fragments needs in its preamble (booktabs: the rules; graphicx:
# \resizebox and the figures; amssymb: \checkmark, \boxtimes and the triangles; tabularx: columns that
# wrap). Debian's texlive-latex-base, texlive-latex-recommended and texlive-science have them. Each
# fragment's first line names them.
# siunitx (Debian texlive-science): S columns, numbers aligned on their decimal point
LATEX_PACKAGES = ("booktabs", "graphicx", "amssymb", "tabularx", "siunitx")
PREAMBLE = "% preamble: " + "".join(f"\\usepackage{{{p}}}" for p in LATEX_PACKAGES)
# a summary float holds at most this many rows (networks' names count one): its cells wrap to 2-3
# lines, and the notes under its last part take a third of a page
SUMMARY_ROWS = 12
# Text-mode replacements: the ten LaTeX specials, the characters OT1 fonts lack (< > | would print
# as ¡ ¿ —), and the Unicode the reports print, so the output is ASCII and pdflatex needs no
# inputenc setup. `$` goes through math: \$ in text asks for a TS1 glyph, a bitmap font on a bare TeX.
LATEX_CHARS = {
    "\\": "\\textbackslash{}", "{": "\\{", "}": "\\}", "$": "$\\$$", "&": "\\&", "#": "\\#", "_": "\\_",
    "%": "\\%", "^": "\\textasciicircum{}", "~": "$\\sim$", "<": "\\textless{}", ">": "\\textgreater{}",
    "|": "\\textbar{}", '"': "''", "—": "---", "–": "--", "−": "$-$", "×": "$\\times$", "÷": "$\\div$",
    "Δ": "$\\Delta$", "≥": "$\\geq$", "≤": "$\\leq$", "±": "$\\pm$", "≈": "$\\approx$", "→": "$\\rightarrow$",
    "✓": "\\checkmark{}", "✗": "$\\boxtimes$", "·": "$\\cdot$", "▲": "$\\blacktriangle$",
    "▼": "$\\blacktriangledown$", "⚠": "\\textbf{!}", "†": "$^\\dagger$", "…": "\\ldots{}", "‘": "`", "’": "'", "“": "``", "”": "''", "\u00a0": "~",
}
_NUM = r"[-+−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
_LATEX_TOKEN = re.compile(
    rf"(?<![\w.])\[\s*(?P<lo>{_NUM})\s*,\s*(?P<hi>{_NUM})\s*\]"  # an interval [a, b]
    rf"|(?<![\w.])(?P<mean>{_NUM})\s*±\s*(?P<sd>{_NUM})(?![\w.])"  # mean ± sd
    # a signed number, or one with an exponent; not the 10 of CIFAR-10 or a range's end
    r"|(?<![\w.\-−+])(?P<num>[-−+]\d+(?:\.\d+)?(?:e[-+]?\d+)?|\d+(?:\.\d+)?e[-+]?\d+)(?![\w.])"
    r"|(?P<ch>[^\x20-\x7e]|[\\{}$&#_%^~<>|\"])")


def _latex_num(text: str) -> str:
    """A number for math mode: a true minus sign, and 1e-05 as 1\times10^{-5}."""
    text = text.replace("−", "-")
    mantissa, _, exp = text.partition("e")
    return mantissa + (f"\\times10^{{{int(exp)}}}" if exp else "")


def _latex_char(ch: str) -> str:
    """One character made safe; Unicode the table does not know falls back to its ASCII letters."""
    if ch in LATEX_CHARS:
        return LATEX_CHARS[ch]
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
    return "".join(LATEX_CHARS.get(c, c) for c in plain) or "?"


def latex_text(text: str) -> str:
    """Report text as LaTeX text: specials escaped, Unicode made pdflatex-safe, and numbers typeset:
    negative numbers with a true minus, intervals as $[a, b]$, mean ± sd as $m \\pm s$."""

    def one(m: re.Match) -> str:
        if m["lo"] is not None:  # two math pieces: a line may break after the comma
            return f"$[{_latex_num(m['lo'])},$ ${_latex_num(m['hi'])}]$"
        if m["mean"] is not None:
            return f"${_latex_num(m['mean'])} \\pm {_latex_num(m['sd'])}$"
        if m["num"] is not None:
            return f"${_latex_num(m['num'])}$"
        return _latex_char(m["ch"])

    return _LATEX_TOKEN.sub(one, text)


def _latex_safe_start(tex: str) -> str:
    """A cell or line must not open with '[': after \\\\ or \\item, LaTeX would read it as an option."""
    return "{}" + tex if tex.startswith("[") else tex


# a cell that is a number with what follows it (its interval, ± sd, †, ×, a unit), after a verdict mark
_ALIGNED = re.compile(r"(?P<lead>[✓✗?·⚠] )?(?P<num>[-+−]?\d+(?:\.\d+)?)(?![\d.]|e[-+]?\d)(?P<rest>.*)", re.DOTALL)
BOLD = "\\bfseries\\boldmath "  # \boldmath: numbers are in math mode, which \bfseries alone leaves light


def _aligned(cells: list[str], bold: list[bool], rest_spec: str = "l") -> tuple[list[str], list[list[str]]] | None:
    """A column of text cells as siunitx columns: the verdict mark (if any cell has one), the number
    in an S column (aligned on its decimal point, its sign kept) and what follows it in `rest_spec`.
    Returns (column specs, each row's LaTeX cells), or None for a column of labels. A cell without a
    number (MISSING, 'not reached') is text in the S column."""
    parts = [_ALIGNED.fullmatch(c) for c in cells]
    if not any(parts) or any(m is None and re.search(r"\d", c) for m, c in zip(parts, cells)):
        return None
    nums = [m["num"].replace("−", "-") for m in parts if m]
    ints = max(len(n.lstrip("+-").partition(".")[0]) for n in nums)
    decs = max(len(n.partition(".")[2]) for n in nums)
    fmt = ("+" if any(n[0] in "+-" for n in nums) else "") + str(ints) + (f".{decs}" if decs else "")
    lead, rest = any(m and m["lead"] for m in parts), any(m and m["rest"].strip() for m in parts)
    specs = ["l"] * lead + [f"S[table-format={fmt},detect-weight,retain-explicit-plus]"] + ["@{}" + rest_spec] * rest
    rows = []
    for m, c, b in zip(parts, cells, bold):
        bf = BOLD if b else ""
        if m is None:
            rows.append([""] * lead + [f"{{{bf}{latex_text(c)}}}"] + [""] * rest)
            continue
        # "± 0.14" and "[a, b]" stand apart from their number; "×", "%" and "†" follow it closely
        gap = "\\enspace " if m["rest"][:1].isspace() and m["rest"].strip() else ""
        tail = gap + _latex_safe_start(latex_text(m["rest"].strip()))
        # siunitx sets an S cell's number bold on \bfseries alone (detect-weight); \boldmath there is lost
        rows.append([latex_text((m["lead"] or "").strip())] * lead + ["\\bfseries " * b + m["num"].replace("−", "-")]
                    + [f"{{{bf}{tail}}}" if bf and tail else tail] * rest)
    return specs, rows


def _latex_cell(cell, kind: str) -> str:
    """One table cell that is not a number (`_aligned` takes those), LaTeX-safe."""
    return _latex_safe_start(latex_text(format_cell(cell, kind, "text")))


def latex_labels(tables: list[Table]) -> list[str]:
    """Stable \\label keys, one per table, from its id and what sets it apart (dataset, network,
    norm): tab:kbn-summary-batch, tab:kbn-table6-mnist-mlp-none. A repeat gets -2, -3, ..."""
    out, seen = [], {}
    for t in tables:
        words = "-".join([t.id, *map(str, t.label)]).lower().replace("_", "-")
        key = "tab:kbn-" + re.sub(r"[^a-z0-9-]+", "-", words).strip("-")
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}-{seen[key]}")
    return out


def _latex_caption(title: str) -> str:
    """The caption: LaTeX numbers the tables itself, so the thesis's own number moves to the end
    ("Table 6 — X" becomes "X (the thesis's Table 6)")."""
    m = re.match(r"(Tables? [\d–]+) — (.+)", title)
    if m:
        title = f"{m[2][0].upper()}{m[2][1:]} (the thesis's {m[1]})"
    return latex_text(title)


def _latex_summary(t: Table, label: str) -> str:
    """The summary as a real table: a row per optimizer, a column per quantity (difference, rel,
    P(win), speed, ...), the networks as row groups; numbers in siunitx S columns (`_aligned`: the
    difference's and speed-up's interval wrap after them, tabularx), so it is as wide as the text and
    never shrunk; a table* (both columns of a two-column page). Taller than SUMMARY_ROWS rows it
    continues in further floats, the notes under the last."""
    parts = [[c.parts() if isinstance(c, Summary) else None for c in row[1:]] for row in t.rows]  # once per cell
    keys = list(dict.fromkeys(k for row in parts for p in row if p is not None for k in p))
    names = {"diff": "difference (points)", "speed": "speed-up"}
    wrap = ">{\\raggedright\\arraybackslash}X"
    # every (network, optimizer) with a cell, in the order printed
    where = [(c, r) for c in range(1, len(t.headers)) for r, row in enumerate(t.rows) if row[c] is not None]
    specs, columns = ["l"], []
    for k in keys:
        texts = [parts[r][c - 1].get(k, MISSING) if parts[r][c - 1] is not None else MISSING for c, r in where]
        # what follows a number (an interval, "pts", "× in time") wraps: a two-column page is narrow
        col = _aligned(texts, [False] * len(texts), wrap)
        if col is None:
            col = [wrap if k in ("diff", "speed", "did not train") else "l"], [[_latex_safe_start(latex_text(x))]
                                                                                for x in texts]
        specs += col[0]
        columns.append((k, len(col[0]), col[1]))
    cells = {key: [latex_text(t.rows[key[1]][0])] + [x for _, _, rows in columns for x in rows[i]]
             for i, key in enumerate(where)}
    groups = [(network, [cells[c, r] for r in range(len(t.rows)) if (c, r) in cells])
              for c, network in enumerate(t.headers[1:], start=1)]
    groups = [(network, rows) for network, rows in groups if rows]
    spec = "@{}" + "".join(specs) + "@{}"
    head = " & ".join(["optimizer"] + [f"\\multicolumn{{{n}}}{{l}}{{{_two_lines(names.get(k, k))}}}"
                                       for k, n, _ in columns]) + " \\\\"
    floats, part, height = [], [], 0
    for network, rows in groups:
        if part and height + len(rows) + 1 > SUMMARY_ROWS:
            floats.append(part)
            part, height = [], 0
        part.append((network, rows))
        height += len(rows) + 1
    if part:
        floats.append(part)
    notes = "".join(f"{latex_text(n)}\\par\n" for n in _notes(t, "latex"))
    out = []
    for i, part in enumerate(floats):
        body = []
        for network, rows in part:
            body.append(("\\addlinespace\n" if body else "") + f"\\multicolumn{{{len(specs)}}}{{@{{}}l}}"
                        f"{{\\itshape {latex_text(network)}}} \\\\")
            body += [" & ".join(r) + " \\\\" for r in rows]
        caption = _latex_caption(t.title) + (" (continued)" if i else "")
        last = i == len(floats) - 1
        out.append(f"\\begin{{table*}}[htbp]\n\\centering\n\\caption{{{caption}}}\n"
                   f"\\label{{{label if not i else f'{label}-part{i + 1}'}}}\n"
                   f"{{\\small\\setlength{{\\tabcolsep}}{{4pt}}\n\\begin{{tabularx}}{{\\textwidth}}{{{spec}}}\n\\toprule\n"
                   f"{head}\n\\midrule\n" + "\n".join(body) + "\n\\bottomrule\n\\end{tabularx}}\n"
                   + (f"\\par\\smallskip\n{{\\footnotesize\\raggedright\n{notes}}}\n" if notes and last else "")
                   + "\\end{table*}\n")
    return "\n".join(out)


def _two_lines(header: str) -> str:
    """'Δband (decades)' on two lines (a nested tabular): a header no wider than its numbers."""
    first, sep, unit = header.partition(" (")
    if not sep:
        return latex_text(header)
    return f"\\begin{{tabular}}[b]{{@{{}}l@{{}}}}{latex_text(first)}\\\\{latex_text('(' + unit)}\\end{{tabular}}"


def _latex_table(t: Table, label: str) -> str:
    """One table as a float: caption and label above, booktabs rules, the notes in small print under
    the tabular; numeric columns in siunitx S columns (`_aligned`), a header over each column's parts.
    \\resizebox shrinks a table wider than the line to fit it and leaves a narrow one at its size (the
    \\ifdim): tabular* could only squeeze the space between columns, which is not enough for Tables
    7-10 (three columns per epoch) or a summary of many networks."""
    if t.kind == "summary":
        return _latex_summary(t, label)
    texts = [[format_cell(cell, _row_kind(t, row), "text") for cell in row] for row in t.rows]
    specs, heads, body = [], [], [[] for _ in t.rows]
    for c, header in enumerate(t.headers):
        bold = [(r, c) in t.marks for r in range(len(t.rows))]
        column = _aligned([row[c] for row in texts], bold) if c else None
        if column is None:
            column = ["l"], [[f"{{{BOLD}{x}}}" if b else x] for x, b in
                             zip((_latex_cell(row[c], _row_kind(t, row)) for row in t.rows), bold)]
        specs += column[0]
        heads.append(f"\\multicolumn{{{len(column[0])}}}{{{'l' if c == 0 else 'c'}}}{{{latex_text(header)}}}")
        for out, cells in zip(body, column[1]):
            out += cells
    lines = [" & ".join(heads) + " \\\\", "\\midrule"] + [" & ".join(r) + " \\\\" for r in body]
    notes = "".join(f"{latex_text(n)}\\par\n" for n in _notes(t, "latex"))
    return (f"\\begin{{table}}[htbp]\n\\centering\n\\caption{{{_latex_caption(t.title)}}}\n\\label{{{label}}}\n"
            "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            f"\\begin{{tabular}}{{@{{}}{''.join(specs)}@{{}}}}\n\\toprule\n" + "\n".join(lines)
            + "\n\\bottomrule\n\\end{tabular}}\n"
            + (f"\\par\\smallskip\n{{\\footnotesize\\raggedright\n{notes}}}\n" if notes else "")
            + "\\end{table}\n")


# what each picture is, as the findings' pointer to it names it (the file names' prefixes, kbn.report.plots)
FIGURE_NAMES = (("curves_accuracy", "accuracy curves"), ("curves_loss", "loss curves"),
                ("lr_sensitivity", "learning-rate sensitivity"), ("expected_best", "expected best after k trials"),
                ("rel_heatmap", "rel per cell"), ("adam_bn_jumps", "Adam's epoch-to-epoch jumps"),
                ("preactivations", "pre-activation percentiles"))
WIDE_FIGURE_IN = 6.5  # a picture wider than this (inches) spans both columns of a two-column page


def figure_label(path) -> str:
    """fig:kbn-rel-heatmap for rel_heatmap.png."""
    return "fig:kbn-" + re.sub(r"[^a-z0-9]+", "-", Path(path).stem.lower()).strip("-")


def latex_figures(paths) -> str:
    """The report's pictures as figure floats: \\includegraphics of the file as written (a path
    relative to where pdflatex runs, or absolute), its caption (kbn.report.plots wrote it into the PNG: what
    is drawn, over how many seeds, what its band is) and a label (`figure_label`); at its own size
    (the PNG's dpi), shrunk to the line where wider; a picture of several panels is a figure* (both
    columns of a two-column page)."""
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            text, wide = im.text.get("Description", ""), im.size[0] / im.info.get("dpi", (100,))[0] > WIDE_FIGURE_IN
        env = "figure*" if wide else "figure"
        out.append(f"\\begin{{{env}}}[htbp]\n\\centering\n"
                   "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{"
                   f"\\includegraphics{{{p}}}}}\n"
                   f"\\caption{{{latex_text(text or Path(p).stem)}}}\n\\label{{{figure_label(p)}}}\n\\end{{{env}}}\n")
    return "\n".join(out)


# which picture draws what a claim reads (kbn.report.findings' wording -> a picture's file prefix)
CLAIM_FIGURES = (("improves test accuracy", "rel_heatmap"), ("speeds up convergence", "curves_accuracy"),
                 ("helps most in the first epochs", "curves_accuracy"), ("jumps from epoch to epoch", "adam_bn_jumps"))


def _claim_figure(claim: str, paths) -> str:
    """' (Figure~\\ref{..})' for the first picture that draws what `claim` reads; '' if none does."""
    for words, prefix in CLAIM_FIGURES:
        if words in claim:
            refs = [figure_label(p) for p in paths if Path(p).stem.startswith(prefix)]
            return f" (Figure~\\ref{{{refs[0]}}})" if refs else ""
    return ""


def _figure_pointer(paths) -> str:
    """'Pictures: Figure~\\ref{..} (accuracy curves), ...' for the findings' first line."""
    refs = []
    for p in paths:
        name = next((n for prefix, n in FIGURE_NAMES if Path(p).stem.startswith(prefix)), Path(p).stem)
        refs.append(f"Figure~\\ref{{{figure_label(p)}}} ({latex_text(name)})")
    return f"Pictures of these results: {', '.join(refs)}.\n\n" if refs else ""


def latex_document(title: str, tables_tex: str, findings_tex: str = "", subtitle: str = "") -> str:
    """A whole pdflatex document: the tables (render's LaTeX), then the findings (render_findings's).
    Dozens of tables and little text: the floats queue beyond LaTeX's 18 (\\extrafloats), and the
    \\clearpage that puts them before the findings flushes them all at once, one output cycle each
    (\\maxdeadcycles, 100 by default: 120 tables stopped with "Output loop---100 consecutive dead
    cycles")."""
    packages = "".join(f"\\usepackage{{{p}}}\n" for p in LATEX_PACKAGES)
    floats = tables_tex.count("\\begin{table") + tables_tex.count("\\begin{figure")
    return ("\\documentclass{article}\n\\usepackage[margin=2cm]{geometry}\n" + packages
            + "\\renewcommand{\\topfraction}{0.95}\\renewcommand{\\bottomfraction}{0.95}\n"
            "\\renewcommand{\\textfraction}{0.05}\\renewcommand{\\floatpagefraction}{0.7}\n"
            "\\setcounter{topnumber}{9}\\setcounter{bottomnumber}{9}\\setcounter{totalnumber}{9}\n"
            f"\\extrafloats{{{floats + 20}}}\\maxdeadcycles={10 * floats + 100}\n"
            f"\\title{{{latex_text(title)}"
            + (f"\\\\[1ex]\\normalsize\\normalfont {latex_text(subtitle)}" if subtitle else "")
            + "}\n\\date{}\n\\begin{document}\n\\maketitle\n"
            f"{tables_tex}\n" + (f"\\clearpage\n{findings_tex}" if findings_tex else "") + "\\end{document}\n")


def render_findings(items: list[dict], fmt: str = "text", width: int | None = None, figures=()) -> str:
    """The checked claims as text (wrapped to `width`, default the terminal's, with a hanging indent),
    a markdown list, or a LaTeX itemize (every special escaped) after a line that points to each of
    `figures` (the pictures `latex_figures` made floats of)."""
    if fmt == "latex":
        items_tex = "".join(f"\\item{{}} {latex_text(MARKS.get(f['verdict'], ''))} "
                            f"\\textbf{{{latex_text(f['verdict'])}}} --- {latex_text(f['claim'])}: "
                            f"{latex_text(f['evidence'])}{_claim_figure(f['claim'], figures)}\n" for f in items)
        listed = (f"{{\\raggedright\n\\begin{{itemize}}\n{items_tex}\\end{{itemize}}\n}}\n" if items
                  else "None could be checked.\n")
        # \\clearpage: the tables float; the findings that read them come after them, not before
        return (f"{PREAMBLE}\n\\clearpage\n\\subsection*{{Findings of the thesis, checked against these results}}\n"
                f"{_figure_pointer(figures)}{listed}")
    if fmt == "markdown":
        return "### Findings of the thesis, checked\n\n" + "".join(
            f"- {MARKS.get(f['verdict'], '')} **{f['verdict']}** — {f['claim']}: {f['evidence']}\n" for f in items)
    from kbn.core import console

    cols = width or console.width()
    return "Findings of the thesis, checked against these results\n\n" + "".join(
        console.wrap(f"{MARKS.get(f['verdict'], '-')} [{f['verdict']}] {f['claim']}", cols, "  ", "      ") + "\n"
        + console.wrap(f["evidence"], cols, "      ") + "\n" for f in items)

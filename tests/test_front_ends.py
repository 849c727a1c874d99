"""What people read: the LaTeX a paper includes (compiled with pdflatex where it is installed) and
`kbn status` in a terminal."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kbn.core import console

from kbn import report
from kbn.cli import main

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(
    PDFLATEX is None, reason="pdflatex is not installed (Debian: texlive-latex-base texlive-latex-recommended; "
    "`make data` installs them)")
SIUNITX = bool(shutil.which("kpsewhich")) and subprocess.run(["kpsewhich", "siunitx.sty"], capture_output=True,
                                                               text=True).stdout.strip() != ""
needs_siunitx = pytest.mark.skipif(PDFLATEX is None or not SIUNITX, reason="pdflatex or siunitx.sty is not installed "
                                   "(Debian: texlive-science; `make data` installs it)")
# every LaTeX special, and the Unicode the reports print
SPECIALS = "a\\b {c} $d & e# f^g h_i j~k 5% l<m n>o |x| — × ÷ Δ − ≥ ± ✓ ✗ · ▲ ▼ −0.25 and -3"


@pytest.fixture
def tiny_sweep(finished_tiny_sweep):
    return finished_tiny_sweep


def hurting(seeds=range(3)) -> pd.DataFrame:
    """Long-format accuracies where the norm hurts: negative differences, rels and interval ends."""
    rng = np.random.default_rng(0)
    recs = []
    for opt, effect in (("sgd", -0.04), ("adam", 0.01)):
        for seed in seeds:
            for e in (1, 2, 3):
                base = 0.6 + 0.1 * e + rng.normal(0, 0.003)
                for norm, acc in (("none", base), ("batch", base + effect + rng.normal(0, 0.003))):
                    for split in ("validation", "test"):
                        recs.append(dict(dataset="mnist", arch="mlp", norm=norm, optimizer=opt, seed=seed, epoch=e,
                                         split=split, accuracy=acc))
    return report.normalise_long(pd.DataFrame(recs))


# ---------------------------------------------------------------- LaTeX, as text


def test_latex_text_escapes_every_special_and_makes_unicode_safe():
    tex = report.latex_text(SPECIALS)
    assert tex.isascii(), [c for c in tex if not c.isascii()]
    for want in ("\\textbackslash{}", "\\{c\\}", "\\$", "\\&", "\\#", "\\textasciicircum{}", "\\_",
                 "j$\\sim$k", "5\\%", "\\textless{}", "\\textgreater{}", "\\textbar{}x\\textbar{}", "---",
                 "$\\times$", "$\\div$", "$\\Delta$", "$\\geq$", "$\\pm$", "\\checkmark", "$-0.25$", "$-3$"):
        assert want in tex, want
    assert "%" not in tex.replace("\\%", "")  # a bare % would comment out the rest of the line
    assert report.latex_text("0.51 [-0.44, 0.57]") == "0.51 $[-0.44,$ $0.57]$"  # typeset, true minus, breakable
    assert report.latex_text("70.10 ± 0.14") == "$70.10 \\pm 0.14$"
    assert report.latex_text("CIFAR-10, 2-epoch trials") == "CIFAR-10, 2-epoch trials"  # hyphens stay hyphens


def test_latex_tables_are_floats_with_captions_labels_and_booktabs_rules():
    tables = report.build_tables(hurting())
    tex = report.render(tables, "latex")
    assert tex.isascii()
    # the summary is a table* (both columns of a two-column page), the others tables
    assert tex.count("\\begin{table") == len(tables) == tex.count("\\caption{") == tex.count("\\end{table")
    assert tex.count("\\begin{table*}") == 1
    labels = re.findall(r"\\label\{([^}]*)\}", tex)
    assert len(labels) == len(tables) == len(set(labels))  # stable and distinct
    assert "tab:kbn-summary-batch" in labels and "tab:kbn-table6-mnist-mlp-none" in labels
    assert all(re.fullmatch(r"tab:kbn-[a-z0-9-]+", label) for label in labels)
    assert tex.count("\\toprule") == tex.count("\\bottomrule") == len(tables)
    assert tex.startswith(report.PREAMBLE + "\n")  # what a document needs, on the fragment's first line
    assert "\\hline" not in tex and len(re.findall(r"^%", tex, re.M)) == 1  # no titles hidden in comments
    # negative numbers (in S columns: siunitx typesets the minus) and intervals (math: a true minus)
    assert re.search(r"& (\\bfseries\\boldmath )?-\d+\.\d\d ", tex) and re.search(r"\$\[-\d", tex)
    assert "$\\pm$" in tex or "\\pm" in tex
    assert "\\footnotesize" in tex and "Protocol:" in tex  # the notes under each tabular
    assert "\\resizebox" in tex  # wide tables shrink to the line, narrow ones keep their size
    summary = tex.split("\\end{table}")[0]
    assert "$\\boxtimes$" in summary or "\\checkmark" in summary  # the verdict marks, LaTeX-safe


def test_latex_findings_are_an_escaped_itemize():
    items = report.findings(hurting()) + [{"claim": SPECIALS, "verdict": "contradicted", "evidence": SPECIALS}]
    tex = report.render_findings(items, "latex")
    assert tex.isascii() and "\\begin{itemize}" in tex and tex.count("\\item") == len(items)
    assert "\\textgreater{}" in tex and "\\textbar{}x\\textbar{}" in tex and "$-0.25$" in tex
    assert tex.startswith(report.PREAMBLE + "\n\\clearpage\n")  # after the tables that float above it
    assert "%" not in tex.removeprefix(report.PREAMBLE).replace("\\%", "")


def test_standalone_is_only_for_latex(capsys, tmp_path):
    df = hurting()
    (tmp_path / "acc.csv").write_text(df.drop(columns=["step", "lr", "wall_time"]).to_csv(index=False))
    assert main(["report", "--from-csv", str(tmp_path / "acc.csv"), "--standalone"]) == 2
    err = capsys.readouterr().err
    assert "--standalone" in err and "--format latex" in err


# ---------------------------------------------------------------- LaTeX, compiled


def compile_tex(folder: Path, name: str, text: str) -> str:
    """pdflatex twice (labels settle); asserts a clean run and returns the PDF's text ('' without pdftotext)."""
    (folder / f"{name}.tex").write_text(text)
    for _ in range(2):
        run = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"], cwd=folder,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-3000:]
    log = (folder / f"{name}.log").read_text(errors="replace")
    for bad in ("Missing character", "Undefined control sequence", "Unicode character", "Overfull \\hbox",
                "Float too large"):
        assert bad not in log, (bad, log[log.find(bad) - 500: log.find(bad) + 500])
    if not shutil.which("pdftotext"):
        return ""
    return subprocess.run(["pdftotext", f"{name}.pdf", "-"], cwd=folder, capture_output=True, text=True,
                          check=True).stdout


WRAPPER = ("\\documentclass{article}\n" + report.PREAMBLE.removeprefix("% preamble: ") + "\n"
           "\\begin{document}\nA paper's text, then the report.\n\\input{fragment}\n"
           "See Table~\\ref{tab:kbn-summary-batch}.\n\\end{document}\n")


def check_both(folder: Path, argv: list[str], capsys, negative: bool) -> None:
    """`kbn report ... --format latex` compiles standalone and \\input into a small document."""
    assert main(argv + ["--format", "latex", "--standalone"]) == 0
    standalone = capsys.readouterr().out
    assert standalone.startswith("\\documentclass") and standalone.rstrip().endswith("\\end{document}")
    pdf = compile_tex(folder, "standalone", standalone)
    assert main(argv + ["--format", "latex"]) == 0
    fragment = capsys.readouterr().out
    assert "\\documentclass" not in fragment and "\\begin{document}" not in fragment
    (folder / "fragment.tex").write_text(fragment)
    wrapped = compile_tex(folder, "wrapper", WRAPPER)
    for text in (pdf, wrapped):
        if text:
            assert re.search(r"Table 1: Summary", text), text[:500]  # a caption, numbered by LaTeX
            assert "Findings of the thesis" in text
            if negative:  # a true minus sign (U+2212), not a hyphen, before a negative number
                assert re.search(r"\u2212\d+\.\d\d", text) and not re.search(r"(?<![\w-])-\d+\.\d\d", text)
    if wrapped:
        assert "See Table 1." in wrapped  # the label resolves


@needs_siunitx
@pytest.mark.parametrize("cls", ["article", "article}[twocolumn"])
def test_latex_fragments_of_a_wide_report_drop_into_a_paper(tmp_path, capsys, cls):
    """A report of 4 networks x 3 optimizers \\input into a default article, and into a two-column
    page: no overfull box, no float too large (compile_tex), the findings after every table."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_console import wide_csv

    csv = wide_csv(tmp_path / "wide.csv")
    assert main(["report", "--from-csv", str(csv), "--format", "latex", "--out", str(tmp_path / "pics")]) == 0
    fragment = capsys.readouterr().out
    first = fragment.splitlines()[0]
    assert first == report.PREAMBLE and "tabularx" in first and "siunitx" in first
    assert "S[table-format=" in fragment  # numbers in siunitx columns
    assert f"\\includegraphics{{{tmp_path / 'pics' / 'rel_heatmap.png'}}}" in fragment  # the pictures as figures
    assert fragment.index("\\begin{figure") < fragment.index("\\clearpage")  # before the findings
    assert "\\label{fig:kbn-rel-heatmap}" in fragment and "Figure~\\ref{fig:kbn-rel-heatmap}" in fragment
    claim = next(line for line in fragment.splitlines() if line.startswith("\\item") and "improves test accuracy" in line)
    assert claim.rstrip().endswith("(Figure~\\ref{fig:kbn-rel-heatmap})")  # the claim points to its picture
    (tmp_path / "fragment.tex").write_text(fragment)
    preamble = first.removeprefix("% preamble: ")
    doc = (f"\\documentclass{{{cls.replace('}[', ']{') if '[' in cls else cls}}}\n".replace("{article]{twocolumn}",
           "[twocolumn]{article}") + preamble + "\n\\begin{document}\nText.\n\\input{fragment}\n\\end{document}\n")
    text = compile_tex(tmp_path, "paper", doc)
    if text:
        captions = [m.end() for m in re.finditer(r"Table \d+: ", text)]
        assert len(captions) >= 10 and text.index("Findings of the thesis") > max(captions)
        summary = text[text.index("Table 1: Summary"):]
        head = " ".join(summary[:400].split())
        assert "difference" in head and "(points)" in head and "P(win)" in head  # a column per quantity
        caption = " ".join(re.search(r"Figure 1: (.*?)\n\n", text[text.index("Figure 1: "):], re.S)[1].split())
        assert "3 seeds" in caption and "95% interval" in caption and "hatched" in caption  # what, n, band
        assert text.index("Findings of the thesis") > text.index("Figure 1: ")
        assert re.search(r"Figure 1\b", text[text.index("Findings of the thesis"):])  # referenced, resolved
        assert "??" not in text


@needs_pdflatex
def test_latex_compiles_on_a_synthetic_csv_with_negative_numbers(tmp_path, capsys, monkeypatch):
    df = hurting()
    (tmp_path / "acc.csv").write_text(df.drop(columns=["step", "lr", "wall_time"]).to_csv(index=False))
    # findings whose text holds every special character and the report's Unicode
    real = report.findings
    monkeypatch.setattr(report, "findings", lambda *a, **k: real(*a, **k) + [
        {"claim": SPECIALS, "verdict": "inconclusive", "evidence": SPECIALS}])
    check_both(tmp_path, ["report", "--from-csv", str(tmp_path / "acc.csv")], capsys, negative=True)


@needs_pdflatex
@pytest.mark.slow
def test_latex_compiles_on_a_real_sweep(tiny_sweep, tmp_path, capsys):
    check_both(tmp_path, ["report", str(tiny_sweep)], capsys, negative=False)


# ---------------------------------------------------------------- kbn status


def test_status_names_its_score_and_formats_numbers_one_way(tiny_sweep, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["status", str(tiny_sweep)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "final runs: mean validation accuracy (%)" in lines[0]  # the sweep's select_on, not "score"
    rows = [line.split() for line in lines[2:] if line.startswith("mnist-")]
    assert len(rows) == 2
    for row in rows:
        lr, score = row[5], row[6]
        assert re.fullmatch(r"\d\.\d\de[-+]\d\d", lr), lr  # every learning rate in one format
        assert re.fullmatch(r"\d{1,3}\.\d\d", score) and 0 <= float(score) <= 100, score  # percent, 2 places


@pytest.mark.parametrize("cols", [80, 100])
def test_status_fits_the_terminal(tiny_sweep, capsys, monkeypatch, cols):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["status", str(tiny_sweep)]) == 0
    wide = capsys.readouterr().out
    monkeypatch.setenv("COLUMNS", str(cols))
    assert main(["status", str(tiny_sweep)]) == 0
    out = capsys.readouterr().out
    assert console.widest(out) <= cols < console.widest(wide)
    for word in wide.split():  # nothing dropped: every cell and header word is still there
        assert word in out.split() or set(word) == {"-"}


@needs_pdflatex
def test_a_standalone_report_of_many_tables_compiles(tmp_path):
    """A thesis sweep gives ~60 tables and little text: every float waits for the findings'
    \\clearpage (LaTeX stopped with 'Output loop---100 consecutive dead cycles')."""
    tables = [report.Table("t", f"Table number {i}", ["optimizer", "value"], [["SGD", "-1.50"]] * (1 + i % 25),
                           kind="plain", label=(str(i),), notes=["a note"]) for i in range(120)]
    doc = report.latex_document("many tables", report.render(tables, "latex"), report.render_findings([], "latex"))
    text = compile_tex(tmp_path, "many", doc)
    if text:
        assert "Table 120: Table number 119" in text


@needs_siunitx
def test_latex_numbers_align_on_the_decimal_point(tmp_path):
    """A column's values line up on their decimal point (siunitx S columns), whatever follows them:
    right-aligning whole cells put "+11.81 [+1.00, +22.62]" and "-0.40 [-0.90, +0.10]" at different x."""
    t = report.Table("t", "Aligned", ["optimizer", "rel", "accuracy"],
                     [["SGD", report.Stat(11.81, 1.0, 22.62), report.Stat(70.1, std=0.14, accuracy=True)],
                      ["Adam", report.Stat(-0.40, -0.9, 0.1), report.Stat(9.25, std=10.5, accuracy=True)]], kind="rel")
    tex = report.render([t], "latex")
    assert tex.count("S[table-format=") == 2
    assert compile_tex(tmp_path, "aligned", report.latex_document("aligned", tex))
    run = subprocess.run(["pdftotext", "-bbox", "aligned.pdf", "-"], cwd=tmp_path, capture_output=True, text=True)
    right = {w: float(x) for x, w in re.findall(r'xMax="([\d.]+)" yMax="[\d.]+">([^<]+)</word>', run.stdout)}
    assert right["+11.81"] == pytest.approx(right["\u22120.40"], abs=0.3)  # the same decimal places: the same right edge
    assert right["70.10"] == pytest.approx(right["9.25"], abs=0.3)

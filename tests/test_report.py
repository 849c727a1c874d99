import csv
import re
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kbn import report
from kbn.core import registry
from kbn.cli import main
from kbn.core.config import TrainConfig
from kbn.report.render import format_cell

ROOT = Path(__file__).resolve().parents[1]
TABLE11 = ROOT / "tests" / "reference" / "thesis_table11_deep_mlp_mnist.csv"  # the thesis appendix, copied


def table11_long(path: Path, out: Path) -> dict:
    """The reference Table 11 as long-format accuracies; returns its printed rel rows."""
    rows = [r for r in csv.reader(open(path)) if r and not r[0].startswith("#")]
    header, rels = rows[0], {}
    with open(out, "w") as f:
        f.write("dataset,arch,norm,optimizer,seed,epoch,split,accuracy\n")
        for r in rows[1:]:
            epochs = [int(h.split("_")[1]) for h in header[2:]]
            if r[1] == "rel":
                rels[r[0]] = dict(zip(epochs, map(float, r[2:])))
                continue
            for e, v in zip(epochs, r[2:]):
                f.write(f"mnist,deep_mlp,{r[1]},{r[0]},0,{e},test,{float(v) / 100}\n")
    return rels


def test_table_11_rel_row_is_reproduced_exactly(tmp_path, capsys):
    rels = table11_long(TABLE11, tmp_path / "t11.csv")
    assert main(["report", "--from-csv", str(tmp_path / "t11.csv"), "--format", "csv"]) == 0
    tidy = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    got = tidy[(tidy["table"] == "tables11-12") & (tidy["quantity"] == "rel")]
    assert len(got) == 6 * 5
    for _, g in got.iterrows():
        name = registry.display("optimizer", g["optimizer"])
        assert round(g["value"], 2) == pytest.approx(rels[name][int(g["epoch"])]), (name, g["epoch"])
    assert main(["report", "--from-csv", str(tmp_path / "t11.csv")]) == 0
    text = capsys.readouterr().out
    printed = {line.split()[0]: [float(v) for v in line.split()[2:]]
               for line in text.splitlines() if len(line.split()) == 7 and line.split()[1] == "rel"}
    for name, by_epoch in rels.items():  # the printed rel row, exactly as the thesis prints it (2 places)
        assert printed[name] == list(by_epoch.values()), name


def test_rel_formula():
    assert report.rel(50, 51) == pytest.approx(0.02)
    assert report.rel(90, 91) == pytest.approx(0.1)
    assert report.rel(90, 80) == pytest.approx(-1.0)
    assert report.rel(100, 100) == 0.0
    assert float(report.rel(0, 100)) == 1.0


def test_intervals_contain_the_point_and_are_deterministic():
    # was: a bootstrap interval around the rel of the seed means; now paired per seed, Student-t by default
    x, y = {0: 0.90, 1: 0.91, 2: 0.92}, {0: 0.95, 1: 0.96, 2: 0.94}
    for interval in report.INTERVALS:
        a, b = report.compare(x, y, "rel", interval), report.compare(x, y, "rel", interval)
        assert a == b and a.low <= a.value <= a.high and a.n == 3
        assert a.value == pytest.approx(np.mean(report.rel([90, 91, 92], [95, 96, 94])))
    assert report.compare({0: 0.9}, {0: 0.95}).low is None


def synthetic(seeds=(0, 1), epochs=(1, 2, 3), archs=("mlp", "deep_mlp"), drop=()):
    """Accuracies where the norm helps SGD most and deep networks more."""
    recs = []
    help_ = {"sgd": 0.5, "sgdm": 0.3, "adam": 0.1, "adagrad": 0.2}
    for arch in archs:
        for opt, h in help_.items():
            for norm in ("none", "batch"):
                for seed in seeds:
                    for e in epochs:
                        base = 0.6 + 0.1 * e - (0.2 if arch == "deep_mlp" else 0)
                        acc = base + (h * (1 - base) * (1.5 if arch == "deep_mlp" else 1) if norm == "batch" else 0)
                        acc += 0.002 * seed
                        for split in ("train", "validation", "test"):
                            if (arch, opt, norm) not in drop:
                                recs.append(dict(dataset="mnist", arch=arch, norm=norm, optimizer=opt, seed=seed,
                                                 epoch=e, split=split, accuracy=min(acc, 1.0)))
    return report.normalise_long(pd.DataFrame(recs))


def test_every_table_and_its_marks():
    tables = report.build_tables(synthetic())
    ids = [t.id for t in tables]
    # the answer first: the summary and convergence tables, then the thesis's
    assert ids == ["summary", "convergence", "auc", "convergence", "auc", "table1", "tables2-5", "tables2-5", "table6", "table6",
                   "tables7-10", "tables11-12", "tables11-12"]
    tables = tables[5:]
    t1 = tables[0]
    assert t1.headers == ["optimizer", "MNIST + MLP", "MNIST + deep MLP"]
    assert [r[0] for r in t1.rows] == ["SGD", "SGDm", "Adam", "Adagrad"]
    assert t1.rows[0][1].value == pytest.approx(0.5, abs=0.02) and t1.rows[0][1].low is not None
    t2 = tables[1]
    # the 3 smallest rel per column: Adam, Adagrad, SGDm (SGD helps most)
    assert {r for r, c in t2.marks if c == 1} == {1, 2, 3}
    t6 = tables[3]
    assert all(isinstance(c, report.Stat) for row in t6.rows for c in row[1:]) and len(t6.marks) == 3 * 3
    deep = tables[5]
    assert deep.headers[1:4] == ["1: MLP", "1: deep MLP", "1: deep − shallow"]
    sgd = deep.rows[0]
    assert sgd[3].value == pytest.approx(sgd[2].value - sgd[1].value)
    assert sgd[3].value > 0  # deep networks gain more here
    t11 = tables[6]
    assert [r[1] for r in t11.rows[:3]] == ["none", "batch", "rel"]
    verdicts = {f["claim"]: f["verdict"] for f in report.findings(synthetic())}
    assert verdicts["batch norm helps more on deep networks"] == "supported"
    assert verdicts["the more sophisticated the optimizer, the less batch norm helps"] == "supported"


def test_formats():
    tables = report.build_tables(synthetic(seeds=(0,)))
    text = report.render(tables, "text")
    md = report.render(tables, "markdown")
    tex = report.render(tables, "latex")
    out = report.render(tables, "csv")
    # was: " *" marked text cells, which markdown reads as emphasis; now ▼ / ▲, said in the footer
    # LaTeX bold: \bfseries on a number in an S column (siunitx's detect-weight), \bfseries\boldmath on
    # what follows it (\textbf left the numbers, typeset in math, light)
    assert " ▼" in text and " *" not in text and "**" in md
    assert re.search(r"& \\bfseries \d", tex) and "\\begin{tabular}" in tex
    assert "| optimizer" in md and "±" not in text  # one seed: no spread to show
    df = pd.read_csv(__import__("io").StringIO(out), keep_default_na=False)
    assert list(df.columns) == report.TIDY_COLUMNS
    thesis = df[~df["table"].isin(["summary", "convergence", "auc"])]
    # one seed: values with their n, and no interval, spread or per-seed lines
    assert set(thesis["quantity"]) == {"rel", "rel_n", "accuracy", "accuracy_n", "rel_diff", "rel_diff_n"}
    assert (df[df["table"] == "table1"]["epoch"] == "").all() and (df["seed"] == "").all()


def test_partial_results_show_a_dash_and_a_footnote():
    tables = report.build_tables(synthetic(drop={("mlp", "adam", "batch")}))
    t1 = tables[0]
    assert t1.rows[2][1] is None and t1.rows[2][2] is not None
    text = report.render(tables, "text")
    assert "—" in text and "no finished run for this cell yet" in text
    assert report.render([], "text") == "No finished runs to report yet.\n"


def test_poster_table_from_steps():
    recs = [dict(dataset="mnist", arch="ioffe_mlp", norm=n, optimizer="sgd", seed=0, step=s, split="test",
                 accuracy=a / 100) for n, accs in (("none", (79.2, 92.0)), ("batch", (96.2, 97.2)), ("layer", (95.2, 95.9)))
            for s, a in zip((5000, 10000), accs)]
    df = report.normalise_long(pd.DataFrame(recs))
    *answer, t = report.build_tables(df)
    # step-based runs get the summary and convergence too, in steps
    assert [x.id for x in answer] == ["summary", "summary", "convergence", "auc", "convergence", "auc"]
    assert answer[0].headers == ["optimizer", "MNIST + Ioffe MLP"] and answer[0].rows[0][1].diff.value == pytest.approx(5.2)
    # the ladder: 50 % of the way from chance to none's best (92.0) is 51.0 %, both arms there at step
    # 5000; 90 % (83.8 %) and above: none gets there at 10000, batch norm (96.2) at 5000, twice as fast
    ladder = answer[2]
    assert "steps none" in ladder.headers
    assert [r[1] for r in ladder.rows] == ["50 %", "90 %", "99 %", "100 %"]
    assert ladder.rows[0][2] == "51.00" and ladder.rows[1][2] == "83.80"
    assert [r[3:5] + [r[6]] for r in ladder.rows] == [["5000", "5000", "1.0×"], ["10000", "5000", "2.0×"],
                                                      ["10000", "5000", "2.0×"], ["10000", "5000", "2.0×"]]
    assert t.id == "poster" and t.headers == ["norm", "step 5000", "step 10000"]
    assert [r[0] for r in t.rows] == ["none", "batch", "layer"]
    assert t.rows[1][1].value == pytest.approx(96.2)
    f = report.findings(df)[-1]
    # one seed: no longer "supported" on point values alone
    assert f["verdict"] == "point estimate only" and "holds in all 2 of 2" in f["evidence"]
    assert "batch 96.2%" in f["evidence"]


@pytest.mark.parametrize("content,expect", [
    ("dataset,arch,norm,optimizer,seed,split,accuracy\n", "epoch (or step)"),
    ("dataset,arch,norm,optimizer,seed,epoch,split,accuracy\nmnist,mlp,none,sgd,0,1,test,97.5\n", "fraction"),
    ("dataset,arch,norm,optimizer,seed,epoch,split,accuracy\nmnist,mlp,none,lion,0,1,test,0.9\n", "'lion'"),
    ("dataset,arch,norm,optimizer,seed,epoch,split,accuracy\nmnist,mlp,none,sgd,0,1,dev,0.9\n", "'dev'"),
])
def test_bad_long_csv_is_one_clear_line(tmp_path, content, expect, capsys):
    f = tmp_path / "x.csv"
    f.write_text(content)
    assert main(["report", "--from-csv", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err and str(f) in err


def test_bad_report_options(capsys):
    assert main(["report", "--from-csv", "x.csv", "--format", "html"]) == 2
    assert "markdown" in capsys.readouterr().err
    assert main(["report", "--from-csv", "x.csv", "--epochs", "2,a"]) == 2
    assert "2,5,20" in capsys.readouterr().err
    assert main(["report", "--from-csv", "x.csv", "--interval", "wald"]) == 2
    assert "bootstrap" in capsys.readouterr().err


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, make_images):
    """Real kbn runs on generated data: none/batch x sgd/adam x 2 seeds, 2 epochs, one diverged run."""
    from kbn.data.loading import Dataset
    from kbn.training.train import train

    parts = {}
    for split, n, seed in (("train", 256, 0), ("validation", 64, 1), ("test", 64, 2)):
        x, y = make_images(n, seed)
        parts[f"x_{split}"], parts[f"y_{split}"] = x.astype(np.float32) / 255, y.astype(np.int32)
    ds = Dataset(name="mnist", source="generated", **parts)
    root = tmp_path_factory.mktemp("report") / "sweep"
    for norm in ("none", "batch"):
        for opt in ("sgd", "adam"):
            for seed in (0, 1):
                cfg = TrainConfig(dataset="mnist", norm=norm, optimizer=opt, lr=0.05 if opt == "sgd" else 3e-3,
                                  epochs=2, seed=seed, batch_size=32, test_every_epoch=True)
                train(cfg, root / "runs", verbose=False, dataset=ds)
    blown = dataclasses.replace(ds, x_train=np.full_like(ds.x_train, np.inf))
    train(TrainConfig(dataset="mnist", arch="deep_mlp", norm="none", optimizer="sgd", lr=0.1, epochs=3),
          root / "runs", verbose=False, dataset=blown)
    (root / "search" / "coarse" / "ignored").mkdir(parents=True)
    return root


@pytest.mark.slow
def test_runs_to_tables_export_and_back(run_folder, tmp_path, capsys):
    df = report.collect_runs(run_folder)
    assert set(df["seed"]) == {0, 1} and set(df["split"]) == {"train", "validation", "test"}
    div = df[(df["arch"] == "deep_mlp")]
    held_out = div[div["split"] != "train"]
    assert sorted(held_out[held_out["split"] == "validation"]["epoch"]) == [1, 2, 3]  # to its planned length
    assert (held_out["accuracy"] == 0.1).all()  # at chance
    assert main(["export", str(run_folder), "--out", str(tmp_path / "acc.csv")]) == 0
    assert "accuracies (3 epochs)" in capsys.readouterr().out
    exported = pd.read_csv(tmp_path / "acc.csv")
    # the runs' seconds, for speed in time; where the diverged run diverged, so it reads back as diverged
    assert list(exported.columns) == report.LONG_COLUMNS + ["wall_time", "train_time", "diverged_at"]
    assert set(exported["diverged_at"].dropna()) == {1.0}
    assert main(["report", str(run_folder), "--format", "csv"]) == 0
    from_logs = capsys.readouterr().out
    assert main(["report", "--from-csv", str(tmp_path / "acc.csv"), "--format", "csv"]) == 0
    assert capsys.readouterr().out == from_logs
    for fmt in ("text", "markdown", "latex"):
        assert main(["report", str(run_folder), "--format", fmt]) == 0
        assert "Table 1" in capsys.readouterr().out


def test_report_out_writes_markdown_and_pictures(run_folder, tmp_path, capsys):
    assert main(["report", str(run_folder), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "### Table 1" in md and "Findings" in md
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert pngs == ["adam_bn_jumps.png", "curves_accuracy_mnist_deep_mlp.png", "curves_accuracy_mnist_mlp.png",
                    "curves_loss_mnist_deep_mlp.png", "curves_loss_mnist_mlp.png", "rel_heatmap.png"]
    for p in pngs:
        assert f"]({p})" in md
        assert (tmp_path / "rep" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- integrity (issue "integrity")


def sweep_copy(run_folder, tmp_path) -> Path:
    """A copy of the fixture's sweep that a test may damage."""
    import shutil

    return Path(shutil.copytree(run_folder, tmp_path / "sweep"))


def one_run(sweep: Path, pattern: str) -> Path:
    (folder,) = (sweep / "runs").glob(pattern)
    return folder


def err_line(capsys) -> str:
    """stderr of a command that failed: exactly one line, kbn's, no traceback."""
    err = capsys.readouterr().err
    assert err.startswith("kbn: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_two_final_runs_of_one_seed_are_an_error_naming_both_folders(run_folder, tmp_path, capsys):
    import json
    import shutil

    sweep = sweep_copy(run_folder, tmp_path)
    first = one_run(sweep, "mnist-mlp-none-adam-*-s0")
    second = sweep / "runs" / "mnist-mlp-none-adam-lr0.1-s0"
    shutil.copytree(first, second)
    config = json.loads((second / "config.json").read_text())
    config["settings"]["lr"] = 0.1
    (second / "config.json").write_text(json.dumps(config))
    for cmd in (["report", str(sweep)], ["export", str(sweep), "--out", "-"], ["plot", str(sweep)]):
        assert main(cmd) == 1, cmd
        err = err_line(capsys)
        assert str(first) in err and str(second) in err and "seed 0" in err, err


def test_export_writes_the_lr_and_from_csv_reads_files_with_or_without_it(run_folder, tmp_path, capsys):
    assert main(["export", str(run_folder), "--out", str(tmp_path / "acc.csv")]) == 0
    capsys.readouterr()
    exported = pd.read_csv(tmp_path / "acc.csv")
    assert list(exported.columns) == ["dataset", "arch", "norm", "optimizer", "lr", "seed", "epoch", "split",
                                      "accuracy", "wall_time", "train_time", "diverged_at"]
    assert set(exported[exported["optimizer"] == "adam"]["lr"]) == {3e-3}
    seconds = ["wall_time", "train_time"]  # compared elsewhere
    exported.drop(columns=seconds).to_csv(tmp_path / "acc.csv", index=False)
    exported.drop(columns=["lr", *seconds]).to_csv(tmp_path / "old.csv", index=False)
    outs = []
    for f in ("acc.csv", "old.csv"):
        assert main(["report", "--from-csv", str(tmp_path / f), "--format", "csv"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and "table1" in outs[0]
    # two learning rates for one cell and seed: two runs posing as one seed
    twice = pd.concat([exported, exported.assign(lr=exported["lr"] * 10, epoch=exported["epoch"] + 10)])
    twice.to_csv(tmp_path / "twice.csv", index=False)
    assert main(["report", "--from-csv", str(tmp_path / "twice.csv")]) == 1
    err = err_line(capsys)
    assert "line 2" in err and "lr" in err and "seed" in err, err


@pytest.mark.slow
def test_damaged_runs_are_named_and_unfinished_runs_counted(run_folder, tmp_path, capsys):
    import shutil

    sweep = sweep_copy(run_folder, tmp_path)
    no_metrics = one_run(sweep, "mnist-mlp-batch-sgd-*-s1")
    (no_metrics / "metrics.csv").unlink()
    garbage = one_run(sweep, "mnist-mlp-none-sgd-*-s0")
    (garbage / "result.json").write_text("{garbage")
    unfinished = one_run(sweep, "mnist-mlp-batch-adam-*-s1")
    (unfinished / "result.json").unlink()
    shutil.copytree(one_run(sweep, "mnist-mlp-none-adam-*-s1"), sweep / "search" / "coarse" / "trial")
    (sweep / "search" / "coarse" / "trial" / "result.json").unlink()  # search trials stay out of reports

    def check(err):
        lines = err.splitlines()
        assert f"kbn: skipped {no_metrics}: metrics.csv is missing" in lines, err
        assert any(line.startswith(f"kbn: skipped {garbage}: result.json is unreadable") for line in lines), err
        assert "kbn: 1 unfinished run(s) not reported" in lines, err
        assert "search" not in err and "Traceback" not in err

    assert main(["report", str(sweep), "--out", str(tmp_path / "rep")]) == 0
    check(capsys.readouterr().err)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"skipped {no_metrics}: metrics.csv is missing" in md and "1 unfinished run(s)" in md
    assert main(["export", str(sweep), "--out", str(tmp_path / "a.csv")]) == 0
    check(capsys.readouterr().err)
    assert main(["plot", str(sweep), "--out", str(tmp_path / "pics")]) == 0
    check(capsys.readouterr().err)


HEADER = "dataset,arch,norm,optimizer,seed,epoch,split,accuracy\n"
ROW = "mnist,deep_mlp,batch,adadelta,0,{epoch},test,{acc}\n"


@pytest.mark.parametrize("content,expect", [
    (HEADER + ROW.format(epoch=5, acc=0.88) + ROW.format(epoch=5, acc=0.10), ["line 3", "line 2", "0.1"]),
    (HEADER + ROW.format(epoch=5, acc=0.88) + ROW.format(epoch=5, acc=0.88), ["line 3", "line 2", "once"]),
    (HEADER + ROW.format(epoch=0, acc=0.88), ["line 2", "epoch", "'0'"]),
    (HEADER + ROW.format(epoch=-1, acc=0.88), ["line 2", "epoch", "'-1'"]),
    (HEADER + ROW.format(epoch="two", acc=0.88), ["line 2", "epoch", "'two'"]),
    (HEADER + "# a comment\n" + ROW.format(epoch=1, acc=0.8) + ROW.format(epoch="2.5", acc=0.9),
     ["line 4", "epoch", "'2.5'"]),
    (HEADER + "mnist,deep_mlp,batch,adadelta,0.5,1,test,0.9\n", ["line 2", "seed", "'0.5'"]),
    (HEADER + "mnist,deep_mlp,batch,adadelta,a,1,test,0.9\n", ["line 2", "seed", "'a'"]),
    (HEADER + ROW.format(epoch=1, acc="nan"), ["line 2", "accuracy", "'nan'"]),
    (HEADER.replace("epoch", "step") + ROW.format(epoch=0, acc=0.9), ["line 2", "step", "'0'"]),
    (HEADER.replace("accuracy", "accuracy,wall_time") + ROW.format(epoch=1, acc="0.9,-1").replace("\n", "") + "\n",
     ["line 2", "wall_time", "'-1'"]),
    (HEADER, ["no data rows"]),
    ("", ["empty"]),
], ids=["conflicting-duplicate", "exact-duplicate", "epoch-0", "epoch-minus-1", "epoch-text", "epoch-2.5-after-comment",
        "seed-0.5", "seed-text", "accuracy-nan", "step-0", "wall-time-negative", "header-only", "empty-file"])
def test_from_csv_rows_that_would_change_the_numbers_are_one_line(tmp_path, content, expect, capsys):
    f = tmp_path / "x.csv"
    f.write_text(content)
    assert main(["report", "--from-csv", str(f)]) == 1
    err = err_line(capsys)
    assert str(f) in err
    for part in expect:
        assert part in err, (part, err)


def test_bad_out_paths_are_one_line(run_folder, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for cmd in (["report", str(run_folder), "--out", str(a_file)], ["plot", str(run_folder), "--out", str(a_file)],
                ["export", str(run_folder), "--out", str(tmp_path)],
                ["report", str(run_folder), "--out", "/proc/x"], ["plot", str(run_folder), "--out", "/proc/x"],
                ["export", str(run_folder), "--out", "/proc/x/acc.csv"], ["export", str(run_folder), "--out", "/proc/x"]):
        assert main(cmd) != 0, cmd
        err = err_line(capsys)
        assert "out" in err, err
    assert a_file.read_text() == "x"


def test_a_folder_without_runs_is_one_line_and_left_untouched(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "absent"):
        for cmd in ("report", "export", "plot"):
            assert main([cmd, str(folder)]) != 0, (cmd, folder)
            assert str(folder) in err_line(capsys)
    assert list((tmp_path / "empty").iterdir()) == [] and not (tmp_path / "absent").exists()


def test_report_with_both_a_folder_and_a_csv_is_an_error(run_folder, tmp_path, capsys):
    f = tmp_path / "x.csv"
    f.write_text(HEADER + ROW.format(epoch=1, acc=0.9))
    assert main(["report", str(run_folder), "--from-csv", str(f)]) == 2
    err = err_line(capsys)
    assert "--from-csv" in err and str(run_folder) in err


def test_requested_epochs_that_no_run_has_are_named(run_folder, capsys):
    assert main(["report", str(run_folder), "--epochs", "2,99"]) == 0
    out, err = capsys.readouterr()
    assert "kbn: no run has epoch 99" in err and "epoch 2" in out
    assert main(["report", str(run_folder), "--epochs", "98,99"]) != 0
    err = err_line(capsys)
    assert "98, 99" in err and "1, 2, 3" in err


# ---------------------------------------------------------------- statistics (issue "answer")


def by_seed(values) -> dict:
    return dict(enumerate(values))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_t_interval_covers_the_true_effect_95_percent_of_the_time(n):
    """Synthetic paired seeds with a known effect, 2,000 replications per n. The difference: x ~ N(90, 1)
    percent, y = x + d with d ~ N(2, 0.8), so the true effect is 2 points. rel: its true effect is
    defined as the expectation of the per-seed rel; drawing the per-seed rel r ~ N(0.3, 0.05) and
    setting y = x + r (100 - x) makes the per-seed rel exactly normal, which is what the t interval
    assumes (real per-seed rels are close to normal when accuracies are not pinned at 100%)."""
    rng = np.random.default_rng(n)
    hits = {"diff": 0, "rel": 0}
    reps = 2000
    for _ in range(reps):
        x = 90 + rng.normal(0, 1, n)
        y = x + rng.normal(2, 0.8, n)
        s = report.compare(by_seed(x / 100), by_seed(y / 100), "diff")
        hits["diff"] += s.low <= 2 <= s.high
        x = 90 + rng.normal(0, 0.5, n)
        y = x + rng.normal(0.3, 0.05, n) * (100 - x)
        s = report.compare(by_seed(x / 100), by_seed(y / 100), "rel")
        hits["rel"] += s.low <= 0.3 <= s.high
    coverage = {k: v / reps for k, v in hits.items()}
    print(f"n = {n}: coverage {coverage}")
    assert 0.93 <= coverage["diff"] <= 0.97 and 0.93 <= coverage["rel"] <= 0.97, coverage


def test_paired_comparison_is_per_seed_and_says_so():
    x, y = {0: 0.90, 1: 0.80, 2: 0.85}, {0: 0.92, 1: 0.83, 2: 0.86}
    d = report.compare(x, y, "diff")
    assert d.paired and d.n == 3 and d.method.startswith("paired")
    assert d.value == pytest.approx(2.0) and d.seeds == pytest.approx({0: 2.0, 1: 3.0, 2: 1.0})
    half = 4.302653 * 1.0 / np.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert (d.low, d.high) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert d.p_win == 1.0
    r = report.compare(x, y, "rel")
    assert r.value == pytest.approx(np.mean([0.2, 0.15, 1 / 15]))
    one = report.compare({0: 0.9}, {0: 0.95}, "rel")
    assert one.low is None and one.n == 1 and one.value == pytest.approx(0.5)


def test_unpaired_seeds_use_welch_and_the_footer_says_so():
    x, y = {0: 0.90, 1: 0.91, 2: 0.89}, {3: 0.93, 4: 0.95, 5: 0.94}
    d = report.compare(x, y, "diff")
    assert not d.paired and "Welch" in d.method and d.value == pytest.approx(4.0)
    assert d.low < 4 < d.high
    r = report.compare(x, y, "rel")
    assert r.value == pytest.approx(report.rel(90, 94)) and r.low < r.value < r.high
    df = synthetic(seeds=(0, 1, 2))
    df.loc[df["norm"] == "batch", "seed"] += 10
    text = report.render(report.build_tables(df), "text")
    assert "unpaired" in text and "Welch" in text


def test_footers_state_method_n_and_warn_below_5_seeds():
    text = report.render(report.build_tables(synthetic(seeds=(0, 1, 2))), "text")
    assert "paired by seed" in text and "Student-t 95% interval" in text and "n = 3 seeds" in text
    assert "n = 3 seeds: intervals are wide; 5 or more are advised" in text
    assert "bootstrap" not in text
    text = report.render(report.build_tables(synthetic(seeds=range(5))), "text")
    assert "n = 5 seeds" in text and "are advised" not in text
    text = report.render(report.build_tables(synthetic(seeds=(0,))), "text")
    assert "one seed" in text and "Student-t" not in text


def test_bootstrap_stays_an_option():
    tables = report.build_tables(synthetic(seeds=(0, 1, 2)), interval="bootstrap")
    t1 = next(t for t in tables if t.id == "table1")
    assert t1.rows[0][1].low is not None and "bootstrap" in " ".join(t1.notes)


def noisy(effect, seeds=range(5), sd=0.004, opts=("sgd", "sgdm", "adam", "adagrad"), epochs=(1, 2, 3, 4, 5),
          archs=("mlp",), rng_seed=0):
    """Long-format accuracies where the norm adds `effect` (a fraction) to every optimizer's accuracy,
    with per-seed noise of `sd`; the curves rise over the epochs."""
    rng = np.random.default_rng(rng_seed)
    recs = []
    for arch in archs:
        for opt in opts:
            for seed in seeds:
                noise = rng.normal(0, sd, len(epochs))
                for norm in ("none", "batch"):
                    own = rng.normal(0, sd, len(epochs))
                    for i, e in enumerate(epochs):
                        acc = 0.80 + 0.02 * e + noise[i] + own[i] + (effect if norm == "batch" else 0)
                        for split in ("validation", "test"):
                            recs.append(dict(dataset="mnist", arch=arch, norm=norm, optimizer=opt, seed=seed,
                                             epoch=e, split=split, accuracy=float(np.clip(acc, 0, 1))))
    return report.normalise_long(pd.DataFrame(recs))


def claim(items, start):
    (f,) = [f for f in items if f["claim"].startswith(start)]
    return f


@pytest.mark.parametrize("effect,verdict", [(0.05, "supported"), (0.0, "inconclusive"), (-0.05, "contradicted")])
def test_verdicts_follow_the_intervals(effect, verdict):
    items = report.findings(noisy(effect))
    f = claim(items, "batch norm improves test accuracy for every optimizer")
    assert f["verdict"] == verdict, f
    assert set(f) >= {"claim", "verdict", "evidence", "cells"} and f["cells"]
    if verdict == "inconclusive":
        assert "seeds would" in f["evidence"], f
    assert all(i["verdict"] in ("supported", "contradicted", "inconclusive", "point estimate only", "not testable")
               for i in items)


def test_one_seed_verdicts_are_point_estimates_only():
    items = report.findings(noisy(0.05, seeds=(0,)))
    assert claim(items, "batch norm improves test accuracy for every optimizer")["verdict"] == "point estimate only"


def test_holm_names_the_cells_that_decide():
    stats = {"a": report.compare(by_seed([0.8] * 5), by_seed([0.9, 0.91, 0.9, 0.92, 0.9]), "diff"),
             "b": report.compare(by_seed([0.8, 0.81, 0.8, 0.79, 0.8]), by_seed([0.8, 0.8, 0.81, 0.8, 0.79]), "diff")}
    verdict, deciding = report.every_cell(stats)
    assert verdict == "inconclusive" and deciding == ["b"]
    assert report.seeds_to_resolve(report.compare(by_seed([0.80, 0.81, 0.79]), by_seed([0.82, 0.82, 0.80]), "diff")) > 3


def curve_df(wall=True):
    """One cell whose norm arm reaches the no-norm arm's final validation accuracy (0.90, at epoch 10)
    at epoch 2, at twice the seconds per epoch."""
    recs = []
    for seed in (0, 1, 2):
        for e in range(1, 11):
            none = 0.80 + 0.01 * e
            batch = min(0.86 + 0.02 * e, 0.95)
            for norm, acc, spe in (("none", none, 1.0), ("batch", batch, 2.0)):
                for split in ("validation", "test"):
                    recs.append(dict(dataset="mnist", arch="mlp", norm=norm, optimizer="sgd", seed=seed, epoch=e,
                                     split=split, accuracy=acc, **({"wall_time": spe * e} if wall else {})))
    return report.normalise_long(pd.DataFrame(recs))


def test_convergence_speed_in_epochs_and_seconds():
    c = report.convergence(report.Results(curve_df()), "mnist", "mlp", "batch", "sgd")
    rungs = {r.q: r for r in c["rungs"]}
    # none's best is its final 90 %; chance 10 %: the 100 % rung is 90 %, reached by none at epoch 10
    # and by batch norm at epoch 2, in 10 s and 4 s (2 s per epoch): 5x in epochs, 2.5x in time
    top = rungs[1.0]
    assert top.target == pytest.approx(90.0) and top.none_seed == {0: 10, 1: 10, 2: 10}
    assert top.norm_seed == {0: 2, 1: 2, 2: 2} and top.speedup.value == pytest.approx(5.0)
    assert top.speedup_seconds.value == pytest.approx(2.5)
    # the 90 % rung: 10 + 0.9 x 80 = 82 %, none at epoch 2, batch norm at epoch 1 (88 %)
    r90 = rungs[0.9]
    assert r90.target == pytest.approx(82.0) and r90.median("none") == 2 and r90.median("norm") == 1
    assert c["speedup"] == pytest.approx(2.0) and c["speedup_seconds"] == pytest.approx(1.0)
    assert c["auc_none"] == pytest.approx(85.5) and c["auc_diff"].value > 0
    no_wall = report.convergence(report.Results(curve_df(wall=False)), "mnist", "mlp", "batch", "sgd")
    assert no_wall["speedup"] == pytest.approx(2.0) and no_wall["speedup_seconds"] is None
    text = report.render(report.build_tables(curve_df()), "text")
    assert "speed 2.0× [2.0, 2.0] (1.0× in time)" in text and "P(win) 1.00" in text  # the same ratio each seed


def test_the_ladder_keeps_its_targets_when_the_baseline_collapses():
    """A no-norm arm that learns to 90 % and falls to chance: its target is its best, not its final
    chance level (which both arms 'reach' at epoch 1), and a norm that never gets there is counted."""
    recs = []
    for seed in (0, 1, 2):
        for e in range(1, 11):
            none = [0.5, 0.7, 0.9, 0.9, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1][e - 1]
            batch = min(0.6 + 0.1 * e, 0.95) if seed < 2 else min(0.5 + 0.03 * e, 0.8)
            for norm, acc in (("none", none), ("batch", batch)):
                for split in ("validation", "test"):
                    recs.append(dict(dataset="mnist", arch="mlp", norm=norm, optimizer="sgd", seed=seed, epoch=e,
                                     split=split, accuracy=acc))
    res = report.Results(report.normalise_long(pd.DataFrame(recs)))
    c = report.convergence(res, "mnist", "mlp", "batch", "sgd")
    top = {r.q: r for r in c["rungs"]}[1.0]
    assert top.target == pytest.approx(90.0) and top.none_seed == {0: 3, 1: 3, 2: 3}
    assert top.norm_seed == {0: 3, 1: 3, 2: None}  # seed 2 with the norm tops out at 80 %: counted, not hidden
    assert top.reached("norm") == 2 and top.speedup.n == 2
    assert {o.kind for o in res.outcomes("mnist", "mlp", "none", "sgd").values()} == {"collapsed"}
    text = report.render(report.build_tables(report.normalise_long(pd.DataFrame(recs))), "text")
    assert "2 of 3 reached" in text


def test_summary_comes_first_with_marks_and_speed():
    tables = report.build_tables(noisy(0.05))
    s = tables[0]
    assert s.id == "summary" and s.headers == ["optimizer", "MNIST + MLP"]
    assert [r[0] for r in s.rows] == ["SGD", "SGDm", "Adam", "Adagrad"]
    text = report.render([s], "text")
    assert "✓" in text and "rel" in text and "pts" in text and "×" in text
    md, tex = report.render([s], "markdown"), report.render([s], "latex")
    assert "✓" in md and "\\checkmark" in tex
    tidy = pd.read_csv(__import__("io").StringIO(report.render([s], "csv")), keep_default_na=False)
    q = set(tidy["quantity"])
    assert {"diff", "diff_ci_low", "diff_ci_high", "diff_n", "rel", "rel_ci_low", "rel_ci_high", "rel_n",
            "p_improvement", "verdict", "speedup"} <= q
    seeds = tidy[tidy["quantity"] == "rel_seed"]
    assert sorted(seeds[seeds["optimizer"] == "sgd"]["seed"].astype(int)) == [0, 1, 2, 3, 4]
    zero = report.render(report.build_tables(noisy(0.0))[:1], "text")
    assert "?" in zero
    hurts = report.render(report.build_tables(noisy(-0.05))[:1], "text")
    assert "✗" in hurts


def test_summary_takes_extra_per_cell_columns():
    res = report.Results(noisy(0.05))
    (s,) = report.summary_tables(res, extra=[("lr band", lambda d, a, norm, opt: 1.5)])
    assert "lr band +1.50" in report.render([s], "text")
    assert "lr band" in set(pd.read_csv(__import__("io").StringIO(report.render([s], "csv")))["quantity"])
    (s,) = report.summary_tables(res, extra=[("lr band", lambda d, a, norm, opt: -0.004)])
    assert "lr band +0.00" in report.render([s], "text")  # a rounded zero has no sign


def test_one_seed_summary_marks_point_estimates():
    (s,) = report.build_tables(noisy(0.05, seeds=(0,)))[:1]
    cells = [format_cell(c, s.kind, "text") for row in s.rows for c in row[1:]]
    assert all(c.startswith("·") and "[" not in c for c in cells), cells


def test_protocol_line_from_the_run_folders(run_folder, tmp_path, capsys):
    import json

    assert main(["report", str(run_folder)]) == 0
    out = capsys.readouterr().out
    assert "Protocol:" in out and "final runs: 2 or 3 epochs, seeds 0, 1; precision: float32" in out
    sweep = sweep_copy(run_folder, tmp_path)
    from kbn.core.config import SweepConfig

    sweep_file = SweepConfig(name="t", datasets=("mnist",), archs=("mlp",), norms=("none", "batch"),
                             optimizers=("sgd", "adam"), epochs=2, seeds=(0, 1), search_epochs=1).to_dict()
    (sweep / "sweep.json").write_text(json.dumps({**sweep_file, "search_seeds": [0]}))  # search_seeds: coming
    scan = report.scan_runs(sweep)
    line = report.protocol_line(scan.protocol)
    assert "learning rate searched with 1-epoch trials" in line and "selected on validation" in line
    assert "search seed 0" in line and "search seeds" not in line and "final runs: 2 or 3 epochs" in line


def test_the_protocol_line_names_the_precision_the_runs_trained_in():
    from pathlib import Path

    from kbn.report.results import protocol_line, read_protocol

    run = {"dataset": "mnist", "arch": "cnn", "norm": "none", "optimizer": "sgd", "epochs": 2, "seed": 0}
    line = protocol_line(read_protocol(Path("/nonexistent"), [{**run, "precision": "mixed_bfloat16"}], []))
    assert "; precision: mixed_bfloat16 (bfloat16 compute; float32 weights, optimizer state, BN statistics, " \
           "softmax and loss)." in line
    old = protocol_line(read_protocol(Path("/nonexistent"), [run], []))  # made before the setting: float32
    assert "seeds 0; precision: float32" in old and "mixed" not in old
    both = protocol_line(read_protocol(Path("/nonexistent"), [run, {**run, "seed": 1, "precision": "mixed_bfloat16"}],
                                       []))
    assert "precision: float32 or mixed_bfloat16" in both


def test_wall_time_travels_through_export(run_folder, tmp_path, capsys):
    assert main(["export", str(run_folder), "--out", str(tmp_path / "acc.csv")]) == 0
    capsys.readouterr()
    exported = pd.read_csv(tmp_path / "acc.csv")
    assert "wall_time" in exported.columns and exported["wall_time"].notna().any()
    df = report.read_long_csv(tmp_path / "acc.csv")
    assert df["wall_time"].notna().any()


def test_rel_interval_never_passes_1():
    s = report.compare(by_seed([0.90, 0.95, 0.99]), by_seed([0.99, 0.999, 0.9999]), "rel")
    assert s.interval and s.high <= 1.0


def test_a_network_missing_its_last_optimizer_still_reports():
    tables = report.build_tables(synthetic(drop={("mlp", "adagrad", "batch")}))
    conv = [t for t in tables if t.id == "convergence"]
    assert [len(t.rows) for t in conv] == [3 * 4, 4 * 4]  # a rung of the ladder per row


def test_text_marks_and_headings_say_what_they_mean():
    """No bare `*` (markdown reads it as emphasis): marked cells end in ▼ (the smallest) or ▲ (the
    largest), and the footer, not the heading, says what the mark means, in each format."""
    tables = report.build_tables(synthetic())
    assert not any("*" in t.title for t in tables)
    text = report.render(tables, "text")
    assert "*" not in text
    t25 = next(t for t in tables if t.id == "tables2-5")
    t6 = next(t for t in tables if t.id == "table6")
    assert "+0.30 [+0.29, +0.31] ▼" in report.render([t25], "text")
    assert "▲" in report.render([t6], "text") and "▼" not in report.render([t6], "text")
    assert "▼ marks the 3 smallest in each column" in report.render([t25], "text")
    assert "▲ marks the 3 largest in each column" in report.render([t6], "text")
    md = report.render([t25], "markdown")
    assert "**+0.30 [+0.29, +0.31]**" in md and "Bold: the 3 smallest in each column" in md
    assert not any("*" in line for line in md.splitlines() if line.startswith("#"))


def test_table_6_titles_are_distinct_and_say_without_normalization():
    t6 = [t for t in report.build_tables(synthetic()) if t.id == "table6"]
    titles = [t.title for t in t6]
    assert len(titles) == 2 and len(set(titles)) == 2
    assert not any("none norm" in t for t in titles)
    assert "without normalization" in titles[0] and "with batch norm" in titles[1]


def test_poster_footer_speaks_only_of_what_it_shows():
    recs = [dict(dataset="mnist", arch="ioffe_mlp", norm=n, optimizer="sgd", seed=seed, step=s, split="test",
                 accuracy=a / 100 + 0.001 * seed)
            for n, accs in (("none", (79.2, 92.0)), ("batch", (96.2, 97.2)), ("layer", (95.2, None)))
            for s, a in zip((5000, 10000), accs) if a is not None for seed in (0, 1)]
    poster = report.build_tables(report.normalise_long(pd.DataFrame(recs)))[-1]
    assert poster.id == "poster"
    assert not any("rel" in n for n in poster.notes), poster.notes
    assert any("±" in n for n in poster.notes)  # what it does show: mean ± sd


def test_from_csv_reads_a_byte_order_mark_and_names_epoch_and_step(tmp_path, capsys):
    rows = ["dataset,arch,norm,optimizer,seed,epoch,split,accuracy"]
    rows += [f"mnist,mlp,{n},sgd,0,1,test,{a}" for n, a in (("none", 0.9), ("batch", 0.92))]
    (tmp_path / "bom.csv").write_text("\n".join(rows) + "\n", encoding="utf-8-sig")  # as Excel saves it
    assert main(["report", "--from-csv", str(tmp_path / "bom.csv")]) == 0
    both = rows[0].replace("epoch", "epoch,step") + "\n" + "mnist,mlp,none,sgd,0,1,16,test,0.9\n"
    (tmp_path / "both.csv").write_text(both)
    capsys.readouterr()
    assert main(["report", "--from-csv", str(tmp_path / "both.csv")]) == 1
    err = capsys.readouterr().err
    assert "columns epoch and step: give one of them, not both (epoch '1', step '16')" in err, err


def test_a_step_based_report_speaks_of_steps_and_its_real_columns():
    """Issue 20's smaller defects: a step-based report said "at the last epoch", and the poster
    finding named a "first column" that was not the table's (dense early steps made the stride 50)."""
    steps = [10, 20, 50, 100, 150, 220, 330, 470, 680, 1000, 1500, 2200, 3300, 4700, 5000, 10000]
    recs = [dict(dataset="mnist", arch="ioffe_mlp", norm=n, optimizer="sgd", seed=seed, step=s, split=split,
                 accuracy=min(0.99, base + 0.1 * np.log10(s) + 0.002 * seed))
            for n, base in (("none", 0.4), ("batch", 0.5), ("layer", 0.48)) for s in steps
            for seed in (0, 1, 2) for split in ("validation", "test")]
    df = report.normalise_long(pd.DataFrame(recs))
    tables = report.build_tables(df)
    assert "at the last step" in tables[0].title and "epoch" not in tables[0].title
    assert any("steps for none to get 90 %" in n for n in tables[0].notes)
    poster = [t for t in tables if t.id == "poster"][0]
    assert "every 5000 steps" in poster.title
    f = [x for x in report.findings(df) if "poster" in x["claim"]][0]
    assert "test accuracy at step 5000 (the first of the poster table's every-5000-steps columns)" in f["evidence"]
    improves = report.findings(df)[0]
    assert "at the last step" in improves["evidence"]
def _pace(folder: Path, col: str) -> float:
    from kbn.runs.runlog import read_metrics

    last = read_metrics(folder)[-1]
    return last[col] / last["epoch"]


def test_seconds_are_training_time_and_old_folders_fall_back_to_wall_time(run_folder, tmp_path, capsys):
    """The report's seconds per epoch are metrics.csv's train_time (compilation and evaluations
    excluded), as its footer says; a folder from before train_time and compile_time (neither in
    metrics.csv nor in result.json) still checks, reports and exports, its seconds the wall time, as
    its footer says."""
    import json
    import shutil

    from kbn.runs.runlog import check_run

    runs = run_folder / "runs"
    seeds = {s: runs / f"mnist-mlp-batch-adam-lr0.003-s{s}" for s in (0, 1)}
    _, _, pace = report.Results(report.collect_runs(run_folder)).curves("mnist", "mlp", "batch", "adam", "validation")
    assert pace == {s: pytest.approx(_pace(f, "train_time")) for s, f in seeds.items()}
    assert all(_pace(f, "train_time") < _pace(f, "wall_time") for f in seeds.values())
    assert main(["report", str(run_folder)]) == 0
    assert "seconds are training time (compilation, evaluations and logging excluded)" in capsys.readouterr().out

    old = tmp_path / "old"
    shutil.copytree(run_folder, old)
    for metrics in old.rglob("metrics.csv"):
        with open(metrics, newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [c for c in rows[0] if c not in ("train_time", "compile_time")]
        with open(metrics, "w", newline="") as f:
            w = csv.DictWriter(f, keep, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        result = metrics.parent / "result.json"
        r = json.loads(result.read_text())
        r["metrics"] = {k: v for k, v in r["metrics"].items() if k not in ("train_time", "compile_time")}
        result.write_text(json.dumps(r))
        assert check_run(metrics.parent).result is not None
    _, _, pace = report.Results(report.collect_runs(old)).curves("mnist", "mlp", "batch", "adam", "validation")
    assert pace == {s: pytest.approx(_pace(old / "runs" / f.name, "wall_time")) for s, f in seeds.items()}
    assert main(["report", str(old)]) == 0
    assert "seconds are wall time, compilation and evaluations included" in capsys.readouterr().out
    assert main(["export", str(old), "--out", str(tmp_path / "old.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "old.csv").columns) == report.LONG_COLUMNS + ["wall_time", "diverged_at"]
    assert main(["report", "--from-csv", str(tmp_path / "old.csv")]) == 0
    assert "seconds are wall time" in capsys.readouterr().out


NUMBER = r"[-+−]?\d+(?:\.\d+)?"


def test_every_difference_is_signed_in_every_table_and_format():
    """A difference (the norm's, deep − shallow's, the area's gain, rel) prints with its sign, in the
    summary and in every other table alike: +11.81 in one and 11.81 in another read as two numbers."""
    import re

    from kbn.report.render import _cells

    tables = report.build_tables(synthetic(seeds=(0, 1, 2)))
    effects = {"table1": None, "tables2-5": None, "tables7-10": None, "auc": [3], "tables11-12": None}
    seen = 0
    for t in tables:
        if t.id not in effects:
            continue
        for r, row in enumerate(_cells(t, "text")):
            if t.id == "tables11-12" and t.rows[r][1] != "rel":
                continue
            for c in effects[t.id] or range(1, len(row)):
                if t.id == "tables11-12" and c == 1:
                    continue
                for num in re.findall(NUMBER, row[c].replace("epoch", "")):
                    assert num[0] in "+-−", (t.id, row[c])
                    seen += 1
    assert seen > 50
    summary = report.render(tables[:1], "text")
    assert re.search(r"rel \+\d\.\d\d \[\+", summary), summary  # rel as signed as the difference beside it
    tex = report.render([t for t in tables if t.id == "table1"], "latex")
    assert "$+0." in tex or "+0." in tex


# ---------------------------------------------------------------- the document (kbn.report.build)


def test_a_notebook_builds_the_report_kbn_report_prints_and_writes(run_folder, tmp_path, capsys):
    assert main(["report", str(run_folder), "--out", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    doc = report.build(str(run_folder))
    assert doc.text() == printed and doc.name == run_folder.name
    md, pictures = doc.write(tmp_path / "nb")
    assert md.read_text() == (tmp_path / "cli" / "report.md").read_text()
    assert sorted(p.name for p in pictures) == sorted(p.name for p in (tmp_path / "cli").glob("*.png"))


def _as_user_optimizer(sweep: Path, display: str, family: str) -> None:
    """Rewrites a copied sweep's adam runs as runs of a user's optimizer `pkg:fast` that recorded
    `display` and `family` (what a run of one's own component writes to config.json)."""
    import json

    for cfg in sweep.glob("runs/*/config.json"):
        config = json.loads(cfg.read_text())
        if config["settings"]["optimizer"] == "adam":
            config["settings"]["optimizer"] = "pkg:fast"
            config["components"] = {"optimizer": {"display": display, "family": family}}
            cfg.write_text(json.dumps(config))


def test_two_sweeps_read_in_one_process_keep_their_own_component_names(run_folder, tmp_path):
    import shutil

    a, b = (Path(shutil.copytree(run_folder, tmp_path / name)) for name in ("a", "b"))
    _as_user_optimizer(a, "Fast A", "plain")
    _as_user_optimizer(b, "Fast B", "adaptive")
    doc_a = report.build(str(a))
    doc_b = report.build(str(b))  # read after a: must not rename a's optimizer
    text_a, text_b = doc_a.text(), doc_b.text()
    assert "Fast A" in text_a and "Fast B" not in text_a
    assert "Fast B" in text_b and "Fast A" not in text_b
    assert doc_a.facts[("optimizer", "pkg:fast")]["family"] == "plain"
    assert registry.display("optimizer", "pkg:fast") == "fast"  # nothing left behind: the attribute's name
    assert registry.family("pkg:fast") == "adaptive"


def test_learnt_facts_hold_inside_their_block_only():
    outer, inner = {}, {}
    registry.learn("optimizer", "pkg:opt", {"display": "Opt", "family": "plain"}, outer)
    registry.learn("optimizer", "pkg:opt", {"display": None}, inner)  # a missing fact adds nothing
    registry.learn("optimizer", "adam", {"display": "not Adam"}, inner)  # kbn's own are never relearnt
    registry.learn("dataset", "npz:x.npz", {"classes": 3}, inner)
    assert inner == {("optimizer", "pkg:opt"): {}, ("dataset", "npz:x.npz"): {"classes": 3}}
    with registry.learnt(outer):
        with registry.learnt(inner):
            assert (registry.display("optimizer", "pkg:opt"), registry.family("pkg:opt")) == ("Opt", "plain")
            assert registry.classes("npz:x.npz") == 3 and registry.display("optimizer", "adam") == "Adam"
        assert registry.classes("npz:x.npz") is None
    assert (registry.display("optimizer", "pkg:opt"), registry.family("pkg:opt")) == ("opt", "adaptive")

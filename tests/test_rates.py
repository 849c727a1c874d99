"""A fixed-rate sweep over a list of shared rates (issue 20 §4): every arm at each rate, each rate its
own final runs; resuming, `kbn status`, `open_sweep` and the report know the rate. A single-number
`lr` (and a sweep.json written before lists existed) behaves as before."""

import json
import re
from pathlib import Path

import numpy as np

import pandas as pd
import pytest
from scipy import stats

from kbn.core.config import load_sweep, sweep_from_dict
from kbn.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

BASE = {"name": "rates", "datasets": ["binary_mnist"], "archs": ["ioffe_mlp"], "norms": ["none", "batch"],
        "optimizers": ["sgd"], "epochs": 1, "seeds": [0, 1], "batch_size": 32, "eval_every_steps": 4,
        "total_steps": 8, "init": "gaussian:0.1"}


@pytest.mark.parametrize("value, msg", [
    ([], r"^sweep: lr: got \[\]; give a positive learning rate or a non-empty list of them"),
    ([0.1, 0], r"^sweep: lr\[1\]: got 0; it must be a positive number"),
    ([0.1, 0.1], r"^sweep: lr: \[0.1, 0.1\] lists a learning rate twice"),
    ("fast", r"^sweep: lr: got 'fast'; give a positive learning rate or a non-empty list of them"),
])
def test_a_bad_list_of_rates_is_one_line(value, msg):
    with pytest.raises(ConfigError, match=msg):
        sweep_from_dict({**BASE, "lr": value})


def test_a_list_of_rates_plans_every_cell_at_each_rate_and_a_number_stays_a_number():
    from kbn.sweep.plan import planned_trials

    many = sweep_from_dict({**BASE, "lr": [0.3, 1.0]})
    assert many.rates == (0.3, 1.0) and planned_trials(many) == 2 * 2 * 2
    assert many.protocol()["lr"] == [0.3, 1.0]
    assert sweep_from_dict(many.to_file_dict()) == many
    one = sweep_from_dict({**BASE, "lr": 0.5})
    assert one.lr == 0.5 and one.rates == (0.5,) and planned_trials(one) == 4
    assert one.to_file_dict()["lr"] == 0.5 and one.protocol()["lr"] == 0.5  # as sweep.json and config.json had it
    # a one-element list is a list of rates (its sweep.json keeps the list), not the number
    assert sweep_from_dict({**BASE, "lr": [0.5]}).to_file_dict()["lr"] == [0.5]


def test_a_sweep_json_written_before_rate_lists_still_reads(tmp_path):
    from kbn.sweep.folder import load_folder_sweep, prepare_folder

    old = {k: v for k, v in BASE.items()} | {"lr": 0.5}  # sweep.json as kbn wrote it for a fixed rate
    (tmp_path / "sweep.json").write_text(json.dumps(old))
    sweep = load_folder_sweep(tmp_path)
    assert sweep.lr == 0.5 and sweep.rates == (0.5,)
    prepare_folder(sweep_from_dict(old), tmp_path)  # resuming with the same file is accepted
    with pytest.raises(ConfigError, match=r"holds a sweep with other settings \(lr differ\)"):
        prepare_folder(sweep_from_dict({**old, "lr": [0.5, 1.0]}), tmp_path)


def test_the_shipped_rates_sweep_is_the_fixed_protocol_at_several_rates():
    fixed, rates = load_sweep(REPO / "sweeps/poster-fixed-lr.toml"), load_sweep(REPO / "sweeps/poster-rates.toml")
    assert rates.rates == (0.1, 0.3, 1.0, 3.0)
    differ = {k for k, v in rates.to_dict().items() if fixed.to_dict()[k] != v}
    assert differ == {"name", "lr"}


@pytest.mark.slow
def test_a_sweep_over_rates_trains_each_rate_and_reports_each(tmp_path, write_cache, capsys):
    import kbn
    from kbn.cli import main
    from kbn.runs.runlog import read_metrics

    write_cache("mnist")
    sweep = tmp_path / "rates.toml"
    fields = {**BASE, "lr": [0.3, 1.0], "probe_preactivations": 20}
    sweep.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()))
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--logdir", str(out), "--workers", "1"]) == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == sorted(f"binary_mnist-ioffe_mlp-{n}-sgd-lr{r}-s{s}" for n in ("batch", "none")
                          for r in ("0.3", "1") for s in (0, 1))
    config = json.loads((out / "runs" / runs[0] / "config.json").read_text())
    assert config["protocol"]["lr_protocol"] == "fixed" and config["protocol"]["lr"] == [0.3, 1.0]
    # resuming finds nothing to do
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--logdir", str(out), "--workers", "1"]) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == runs

    final = {}  # (norm, lr) -> the final runs' test accuracies
    for name in runs:
        cfg = json.loads((out / "runs" / name / "config.json").read_text())["settings"]
        last = read_metrics(out / "runs" / name)[-1]
        final.setdefault((cfg["norm"], cfg["lr"]), []).append(float(last["test_accuracy"]))

    s = kbn.open_sweep(out)
    st = s.status()
    assert list(zip(st.cell, st.chosen_lr, st.final_done, st.final_planned)) == [
        ("binary_mnist-ioffe_mlp-none-sgd", 0.3, 2, 2), ("binary_mnist-ioffe_mlp-none-sgd", 1.0, 2, 2),
        ("binary_mnist-ioffe_mlp-batch-sgd", 0.3, 2, 2), ("binary_mnist-ioffe_mlp-batch-sgd", 1.0, 2, 2)]
    assert s.chosen() == {"binary_mnist-ioffe_mlp-none-sgd": [0.3, 1.0], "binary_mnist-ioffe_mlp-batch-sgd": [0.3, 1.0]}
    assert sorted(s.final_runs.lr) == [0.3] * 4 + [1.0] * 4
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("3.00e-01") == 2 and text.count("1.00e+00") == 2

    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    for rate in ("0.3", "1"):
        assert f"lr {rate} — Convergence — binary MNIST + Ioffe MLP" in text
        assert f"fixed learning rate {rate} for every arm (no search)" in text
    title = "Rates — binary MNIST + Ioffe MLP, SGD: final test accuracy (%) at each shared learning rate"
    assert title in text
    table = text.split(title)[1].split("\n\n")[1].splitlines()
    assert table[0].split() == ["norm", "lr", "0.3", "lr", "1"]
    rows = [line for line in table[2:] if not line.startswith(" ")]  # the notes are indented
    for line in rows:
        norm = line.split()[0]
        cells = re.findall(r"(\d+\.\d\d)†? \[(\d+\.\d\d), (\d+\.\d\d)\]", line)  # mean [low, high]
        assert len(cells) == 2, text
        for (mean, low, high), rate in zip(cells, (0.3, 1.0)):
            accs = 100 * np.array(final[(norm, rate)])
            half = stats.t.ppf(0.975, 1) * accs.std(ddof=1) / np.sqrt(2)
            assert float(mean) == pytest.approx(accs.mean(), abs=0.0051), line
            assert float(low) == pytest.approx(max(accs.mean() - half, 0), abs=0.0051), line
            assert float(high) == pytest.approx(min(accs.mean() + half, 100), abs=0.0051), line
    assert [line.split()[0] for line in rows] == ["none", "batch"]
    notes = " ".join(line for line in table if line.startswith(" "))
    # every stability phrase names its rate: the same norm is two arms here
    assert "lr 0.3: SGD, binary MNIST + Ioffe MLP, none:" in notes and "lr 1: SGD, binary MNIST + Ioffe MLP, none:" in notes

    assert "▲ marks the norm with the highest mean at each rate." in notes  # the norm that wins at each rate
    capsys.readouterr()
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    pictures = sorted(p.name for p in (tmp_path / "rep").glob("curves_accuracy_*.png"))
    assert pictures == ["curves_accuracy_binary_mnist_ioffe_mlp_lr0.3.png", "curves_accuracy_binary_mnist_ioffe_mlp_lr1.png"]
    mechanism = sorted(p.name for p in (tmp_path / "rep").glob("preactivations_*.png"))
    assert mechanism == ["preactivations_binary_mnist_ioffe_mlp_sgd_lr0.3.png", "preactivations_binary_mnist_ioffe_mlp_sgd_lr1.png"]

    assert main(["export", str(out), "--out", str(tmp_path / "acc.csv")]) == 0
    long = pd.read_csv(tmp_path / "acc-steps.csv" if (tmp_path / "acc-steps.csv").exists() else tmp_path / "acc.csv")
    assert sorted(long.lr.unique()) == [0.3, 1.0]

"""The `kbn` command line: a thin layer over the library; every KbnError becomes one line.
It parses and prints: it must not hold a training setting's default or rule (those are kbn.core.config's
and the registry's), and imports Keras only after the backend is chosen."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys

from kbn.core.version import __version__
from kbn.training.backend import choose_backend
from kbn.core import registry
from kbn.core.config import TrainConfig  # no Keras: cheap enough to build the parser from

HOST_DEFAULT = "127.0.0.1"


def _archs_of(args) -> list[str]:
    """The networks whose built models choose the backend (a probe of seconds): none while a setting
    is wrong, so a typo is refused at once, by the command itself."""
    from kbn.core.errors import KbnError

    try:
        if args.command == "train":
            _train_config(args)
            return [args.arch]
        if args.command == "sweep":
            return list(_sweep_of(args).archs)
    except KbnError:
        return []
    return []


def _train_config(args) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**given, "eval_steps": _eval_steps(args.eval_steps)})


def _sweep_of(args):
    """The sweep file, validated, with --precision over its own (named as the option's, not the file's)."""
    from kbn.core.checks import check_choice
    from kbn.core.config import PRECISIONS, load_sweep, sweep_from_dict

    sweep = load_sweep(args.file)
    if args.precision is not None:
        check_choice("precision", args.precision, PRECISIONS)
        sweep = sweep_from_dict({**sweep.to_file_dict(), "precision": args.precision}, where=args.file)
    return sweep


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"kbn: error: {message} (see '{self.prog} --help')\n")  # prog: "kbn" or "kbn train"


def _option(field: dataclasses.Field) -> dict:
    """argparse keywords for a TrainConfig field: a flag for a bool, else a value of the field's type
    (eval_steps stays text: _eval_steps reads it), defaulting to the field's default."""
    if field.type == "bool":
        return {"action": "store_true", "help": field.metadata["help"]}
    kind = float if field.type.startswith("float") else int if field.type.startswith("int") else str
    shown = "" if field.default is None else f" (default: {field.default})"
    if field.name in registry.KINDS:  # the registry's names, as the errors list them
        shown = f"; kbn knows: {', '.join(registry.REGISTRIES[field.name])}{shown}"
    return {"type": kind, "default": field.default, "help": field.metadata["help"] + shown,
            **({"metavar": field.metadata["metavar"]} if field.metadata["metavar"] else {})}


def _add_train(sub):
    p = sub.add_parser("train", help="train one network and log every epoch")
    # One option per TrainConfig field, its default and help from the field itself. Choices are checked
    # by kbn.core.config, which names the field and the allowed values itself.
    for field in dataclasses.fields(TrainConfig):
        p.add_argument("--" + field.name.replace("_", "-"), **_option(field))
    p.add_argument("--logdir", default="logs/runs", help="runs go to LOGDIR/<run name>/ (default logs/runs)")
    p.add_argument("--overwrite", action="store_true", help="redo a run that already finished")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the outcome, not every epoch")


def _add_data(sub):
    p = sub.add_parser("data", help="prepare or inspect the cached datasets")
    p.add_argument("action", choices=["prepare", "info"])
    p.add_argument("datasets", nargs="*", default=["fashion_mnist"])
    p.add_argument("--data-dir", help="folder with the original dataset files")


def _add_sweep(sub):
    p = sub.add_parser("sweep", help="coarse-then-fine learning-rate search per cell, then the final runs")
    p.add_argument("file", help="a sweep file, e.g. sweeps/smoke.toml")
    p.add_argument("--logdir", help="the sweep's folder (default logs/<sweep name>)")
    p.add_argument("--workers", type=int, help="local worker processes: default chosen from the cores and memory; "
                   "1 trains in this process; N > 1 serves the oracle as chief and starts N; 0 serves only")
    p.add_argument("--host", default=HOST_DEFAULT, help=f"chief: address to serve on (default {HOST_DEFAULT})")
    p.add_argument("--port", type=int, help="chief: port to serve on (default: a free one)")
    p.add_argument("--worker", action="store_true",
                   help="join a chief (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP/_PORT, or --oracle)")
    p.add_argument("--oracle", metavar="HOST:PORT", help="with --worker: the chief's address")
    p.add_argument("--pack", type=int, help="trials of one cell trained together as one model "
                   "(default: 32 with JAX on a GPU, else 1)")
    p.add_argument("--precision", metavar="POLICY", help="float32 or mixed_bfloat16 for every run (default: the "
                   "file's precision, else float32); recorded in sweep.json, so a resume must give the same")

    s = sub.add_parser("status", help="which cells of a sweep are done, running, pending; chosen learning rates")
    s.add_argument("logdir")


def _add_report(sub):
    r = sub.add_parser("report", help="the thesis's and the poster's tables (and, with --out, report.md + pictures)")
    r.add_argument("logdir", nargs="?", help="a sweep's folder (or any folder of kbn runs)")
    r.add_argument("--from-csv", metavar="FILE", help="long-format accuracies instead of run logs "
                   "(dataset,arch,norm,optimizer,seed,epoch|step,split,accuracy)")
    r.add_argument("--format", default="text", help="text (default), markdown, latex, csv")
    r.add_argument("--epochs", help="comma-separated epochs to show, e.g. 2,5,20,35,50")
    r.add_argument("--interval", default="t", help="95%% intervals of effects: t (Student-t over paired seeds, "
                   "default) or bootstrap (percentile, 2000 resamples of the seeds)")
    r.add_argument("--out", metavar="DIR", help="also write DIR/report.md with every table and picture "
                   "(with --format latex: the pictures as figures too)")
    r.add_argument("--compare-batch", metavar="DIR", help="another sweep's folder, alike but for the batch size: "
                   "adds each norm's accuracy drop from the larger to the smaller batch (Ba et al. 2016)")
    r.add_argument("--standalone", action="store_true", help="with --format latex: a whole document for pdflatex "
                   "(without it: fragments to \\input, each opening with the packages it needs)")

    e = sub.add_parser("export", help="a sweep's final runs as long-format CSV (what --from-csv reads)")
    e.add_argument("logdir")
    e.add_argument("--out", metavar="FILE", help="default LOGDIR/report/accuracies.csv; '-' for stdout")

    p = sub.add_parser("plot", help="PNG pictures of a sweep (curves, lr sensitivity, rel heat map, Adam+BN jumps)")
    p.add_argument("logdir")
    p.add_argument("--out", metavar="DIR", help="default LOGDIR/report")


def _add_bench(sub):
    b = sub.add_parser("bench", help="trial-epochs per second: plain fit vs the fast path vs packed trials")
    b.add_argument("--archs", default="mlp,deep_mlp,cnn")
    b.add_argument("--norms", default="none,batch")
    b.add_argument("--ks", default="4,8,16,32", help="packed trial counts (learning rates sharing a data order)")
    b.add_argument("--seed-ks", default="", help="packed trial counts with a data order each (seeds), e.g. 8,32")
    b.add_argument("--backends", help="comma-separated; default: the default backend, then tensorflow")
    b.add_argument("--examples", type=int, default=50_000, help="examples per epoch for the MLPs")
    b.add_argument("--cnn-examples", type=int, default=2_000, help="examples per epoch for the CNNs "
                   "(times are scaled to 50k; use 50000 on a GPU)")
    b.add_argument("--epochs", type=int, default=2, help="timed epochs after the compiling one")
    b.add_argument("--out", metavar="FILE", help="also write the table (markdown) and raw JSON next to it")
    b.add_argument("--sweep", metavar="FILE", help="instead: whole-sweep throughput of this sweep file at "
                   "--sweep-workers (default 1 and kbn's choice), each from scratch")
    b.add_argument("--sweep-workers", default="1,auto", help="comma-separated worker counts; 'auto' is kbn's choice")
    b.add_argument("--compile", metavar="FILE", help="instead: compile time in runs of this step-based sweep file "
                   "(one final run per cell, with its eval_steps and with one, no compile cache): wall, training "
                   "and compile seconds, the compile share")
    b.add_argument("--repeat", type=int, default=1, help="with --compile: run the set this many times, "
                   "interleaved; the table gives medians")


def _add_tensorboard(sub):
    t = sub.add_parser("tensorboard", help="TensorBoard on a sweep's final runs (--all: the search trials too)")
    t.add_argument("dir", help="a sweep's folder (e.g. logs/smoke) or a kbn train --logdir")
    t.add_argument("--all", action="store_true", help="serve the search trials (search/) beside the final runs")
    t.add_argument("--host", default=HOST_DEFAULT, help=f"address to serve on (default {HOST_DEFAULT})")
    t.add_argument("--port", type=int, default=6006, help="port to serve on (default 6006)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kbn", description="Does normalization help this optimizer, on this network, and by how much?")
    p.add_argument("--version", action="version", version=f"kbn {__version__}")
    p.add_argument("--log", dest="log_level", metavar="LEVEL", default="info",
                   help="how much of what kbn does is printed: quiet (warnings and each command's own output), "
                        "info (the default: progress lines too) or verbose")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    _add_data(sub)
    _add_sweep(sub)
    _add_report(sub)
    _add_bench(sub)
    _add_tensorboard(sub)
    return p


def cmd_train(args) -> int:
    from kbn.data.loading import check_data_dir
    from kbn.runs.runlog import check_writable_dir

    cfg = _train_config(args)
    check_data_dir(cfg.data_dir)
    check_writable_dir("logdir", args.logdir)
    from kbn.training.train import train  # imports Keras: after the cheap checks

    res = train(cfg, args.logdir, overwrite=args.overwrite, verbose=not args.quiet)
    m = res.metrics
    how = "" if res.outcome is None or not res.outcome.unstable else \
        f" ({res.outcome.describe('step' if cfg.eval_every_steps else 'epoch')})"
    arithmetic = "" if cfg.precision == "float32" else f", trained in {cfg.precision}"  # never on unsaid
    print(f"kbn: {res.status}: test accuracy {m['test_accuracy']:.4f}, validation {m['val_accuracy']:.4f}{how}"
          f"{arithmetic}")
    print(f"kbn: logs in {res.folder}  (metrics.csv, config.json; kbn tensorboard {res.folder.parent})")
    return 0


def _eval_steps(text):
    """--eval-steps: log:FIRST:LAST:N as it is, else a comma list (kbn.core.config checks both)."""
    if text is None or text.startswith("log:"):
        return text
    return [int(v) if v.strip().isdigit() else v for v in text.split(",")]


def cmd_data(args) -> int:
    from kbn import data
    from kbn.core import registry

    for name in args.datasets:  # every name first: preparing one can take minutes
        registry.check("dataset", name)
    for name in args.datasets:
        arrays, source = data.prepare(name, args.data_dir)
        sizes = {s: len(arrays[f"y_{s}"]) for s in data.SPLITS}
        shape = arrays["x_train"].shape[1:]
        kept = f"read from {registry.get('dataset', name).npz} each time, never cached" \
            if source.startswith("npz:") else f"cache {data.cache_path(name)}"
        print(f"{name}: {sizes} images {shape} from {source}; {kept}")
    return 0


def _print_status(logdir) -> None:
    from kbn.core import console
    from kbn.sweep.status import STATUS_HEADERS, folder_progress, problem_lines, status_rows

    state = folder_progress(logdir)
    headers = [h.format(select_on=state.sweep.select_on) for h in STATUS_HEADERS]
    cols = console.width()
    # the cells are already formatted (console.table does not reparse "1.00e-01" as 0.1)
    print(console.table(status_rows(logdir, state=state), headers, cols))
    problems = problem_lines(state)
    if problems:
        print(f"\n{len(problems)} problem(s); run the sweep again to redo these:")
        print("\n".join(console.wrap(line, cols, "  ", "    ") for line in problems))


def cmd_sweep(args) -> int:
    from pathlib import Path

    from kbn.runs.runlog import check_writable_dir

    sweep = _sweep_of(args)  # validated before anything trains
    _check_sweep_options(args)  # before the folder is made
    logdir = check_writable_dir("logdir", Path("logs") / sweep.name if args.logdir is None else args.logdir)
    if not args.worker:  # Keras's import alone takes 10-50 s on a busy machine: say so before it
        print(f"kbn sweep {sweep.name}: loading Keras ({os.environ.get('KERAS_BACKEND', 'jax')}), then the data",
              flush=True)
    from kbn.sweep import distribute, runner

    distribute.oracle_timeout()  # a bad KBN_ORACLE_TIMEOUT fails here, not in every worker

    if args.worker:
        if args.oracle:
            host, _, port = args.oracle.rpartition(":")
            os.environ.update(KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port)
            os.environ.setdefault("KERASTUNER_TUNER_ID", f"worker-{os.getpid()}")
        failed = distribute.run_worker(sweep, logdir, pack=args.pack)
        if not os.environ.get("KBN_CHIEF_PID"):  # a local worker's chief reports for it
            print(f"kbn worker: no more trials{f' ({failed} failed here)' if failed else ''}")
        return 0  # failed trials are the chief's to report; non-zero means this worker stopped on an error
    failed = runner.run_sweep(sweep, logdir, pack=args.pack, workers=args.workers, sweep_file=args.file,
                              host=args.host, port=args.port)
    _print_status(logdir)
    if failed:
        print(f"kbn sweep {sweep.name}: stopped with {failed} failed trial(s) (above); the cells they hold have "
              f"no result. Fix the cause and run the same command: it retries them. Logs in {logdir}")
        return 1
    print(f"kbn sweep {sweep.name}: finished; logs in {logdir}")
    return 0


def _check_sweep_options(args) -> None:
    """Options that conflict or cannot work fail here, before anything starts."""
    from kbn.core.errors import ConfigError

    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"workers: got {args.workers}; it must be 0 or more")
    if args.pack is not None and args.pack < 1:
        raise ConfigError(f"pack: got {args.pack}; it must be 1 or more")
    if args.worker and args.workers is not None:
        raise ConfigError("--worker and --workers conflict: --workers N starts a chief (and N local workers); "
                          "--worker joins one")
    if args.oracle and not args.worker:
        raise ConfigError(f"--oracle {args.oracle}: only a worker joins a chief; add --worker")
    if args.workers in (None, 1) and (args.host != HOST_DEFAULT or args.port is not None):
        raise ConfigError("--host and --port are where a chief serves: add --workers N (N > 1 local workers, "
                          "0 for remote workers only)")
    if args.worker and args.oracle:
        host, _, port = args.oracle.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"oracle: got {args.oracle!r}; give HOST:PORT with a port from 1 to 65535")


def cmd_status(args) -> int:
    _print_status(args.logdir)
    return 0


def _parse_epochs(text):
    from kbn.core.errors import ConfigError

    if text is None:
        return None
    try:
        eps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        eps = []
    if not eps or min(eps) < 1:
        raise ConfigError(f"epochs: got {text!r}; give comma-separated positive integers, e.g. 2,5,20,35,50")
    return eps


def _scan(logdir, need_runs: bool = True):
    """The final runs under `logdir`; every run folder left out is said on stderr, one line each."""
    from kbn.report import document

    found = document.scan_runs(logdir)
    for line in found.notices():
        print(f"kbn: {line}", file=sys.stderr)
    if need_runs and found.runs.empty:
        raise document.ReportError(document.no_runs(logdir, found))
    return found


def _write(path, write) -> None:
    """`write(path)`, an OSError (a folder in the way, no permission) as one line."""
    from kbn.core.errors import ConfigError

    try:
        write(path)
    except OSError as e:
        raise ConfigError(f"out: cannot write {str(path)!r} ({e.strerror or e})") from None


def cmd_report(args) -> int:
    from kbn import report
    from kbn.core.checks import check_choice
    from kbn.core.errors import ConfigError
    from kbn.runs.runlog import check_writable_dir

    fmt = check_choice("format", args.format, report.FORMATS)
    if args.standalone and fmt != "latex":
        raise ConfigError(f"--standalone makes a LaTeX document: add --format latex (got --format {fmt})")
    interval = check_choice("interval", args.interval, report.INTERVALS)
    epochs = _parse_epochs(args.epochs)
    out = args.out and check_writable_dir("out", args.out)  # before any output: a bad --out prints nothing
    try:
        doc = report.build(args.logdir, from_csv=args.from_csv, interval=interval, epochs=epochs,
                           compare_batch=args.compare_batch)
    except report.ReportError as e:
        for line in getattr(e, "notices", ()):  # what was left out, before why nothing is left
            print(f"kbn: {line}", file=sys.stderr)
        raise
    for line in doc.notices + doc.other_notices:
        print(f"kbn: {line}", file=sys.stderr)
    pictures = doc.pictures(out) if out else []  # first: the LaTeX report shows them
    print(doc.text(fmt, standalone=args.standalone, pictures=pictures), end="")
    if out:
        _write(out / "report.md", lambda p: p.write_text(doc.markdown(pictures)))
        print(f"kbn: wrote {out / 'report.md'} and {len(pictures)} picture(s)", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from pathlib import Path

    from kbn import report
    from kbn.core.errors import ConfigError
    from kbn.runs.runlog import check_writable_dir

    parts = report.export_long(report.long_from_runs(_scan(args.logdir).runs))
    if args.out == "-":
        for df in parts.values():
            print(df.to_csv(index=False), end="")
        return 0
    out = Path(args.out or Path(args.logdir) / "report" / "accuracies.csv")
    paths = {axis: out if axis == "epoch" or len(parts) == 1 else out.with_name(out.stem + "-steps.csv")
             for axis in parts}
    for path in paths.values():
        if path.is_dir():
            raise ConfigError(f"out: {str(path)!r} is a folder; give a file name, e.g. {path / 'accuracies.csv'}")
    check_writable_dir("out", out.parent)
    for axis, df in parts.items():
        path = paths[axis]
        _write(path, lambda p: df.to_csv(p, index=False))
        print(f"kbn: wrote {len(df)} accuracies ({df[axis].nunique()} {axis}s) to {path}")
    return 0


def cmd_plot(args) -> int:
    from pathlib import Path

    from kbn import report
    from kbn.core import registry
    from kbn.report import plots, tuning
    from kbn.runs.runlog import check_writable_dir

    scan = _scan(args.logdir, need_runs=False)
    runs = scan.runs
    if runs.empty and tuning.trial_points(args.logdir).empty:  # the search's trials alone make a picture
        raise report.ReportError(report.no_runs(args.logdir, scan))
    out = check_writable_dir("out", args.out or Path(args.logdir) / "report")
    with registry.learnt(scan.facts):  # a user's components by the names their runs recorded
        pictures = plots.plot_all(Path(args.logdir), out, report.long_from_runs(runs), runs)
    for p in pictures:
        print(p)
    return 0


def _counts(field: str, text: str) -> list[int]:
    from kbn.core.checks import check_positive
    from kbn.core.errors import ConfigError

    try:
        ks = [int(k) for k in text.split(",") if k]
    except ValueError:
        raise ConfigError(f"{field}: got {text!r}; give positive integers separated by commas, e.g. 8,32") from None
    for k in ks:
        check_positive(field, k)
    return ks


def _bench_out(text):
    """Where `kbn bench --out` writes, checked before the measurements (which take minutes)."""
    from pathlib import Path

    from kbn.core.errors import ConfigError
    from kbn.runs.runlog import check_writable_dir

    if text is None:
        return None
    out = Path(text)
    if out.is_dir() or out.suffix == ".json":  # the raw JSON goes to <out>.json, beside the table
        raise ConfigError(f"out: got {text!r}; give a file name for the table, e.g. bench.md (the raw JSON goes "
                          "beside it as .json)")
    check_writable_dir("out", out.parent)
    return out


def cmd_bench(args) -> int:
    from kbn.core import registry
    from kbn.tools import bench
    from kbn.core.errors import ConfigError
    from kbn.core.checks import check_choice, check_positive

    for field, value in (("examples", args.examples), ("cnn-examples", args.cnn_examples), ("epochs", args.epochs),
                         ("repeat", args.repeat)):
        check_positive(field, value)
    out = _bench_out(args.out)
    if args.sweep:
        return _bench_sweep(args, out)
    if args.compile:
        return _bench_compile(args, out)
    archs = [registry.check("arch", a, "archs") for a in args.archs.split(",")]
    norms = [registry.check("norm", n, "norms") for n in args.norms.split(",")]
    ks, seed_ks = _counts("ks", args.ks), _counts("seed-ks", args.seed_ks)
    backends = args.backends.split(",") if args.backends else list(dict.fromkeys(
        [os.environ["KERAS_BACKEND"]] + (["tensorflow"] if importlib.util.find_spec("tensorflow") else [])))
    for b in backends:
        check_choice("backends", b, ("jax", "tensorflow", "torch"))
        if importlib.util.find_spec(b) is None:
            raise ConfigError(f"backends: {b} is not installed here; give installed ones (e.g. jax,tensorflow)")
    examples = {"default": args.examples} | {a: args.cnn_examples for a in archs if registry.get("arch", a).conv}
    results = bench.run(archs, norms, ks, backends, examples, epochs=args.epochs, seed_ks=seed_ks)
    headers, rows = bench.table(results)
    return _bench_output(headers, rows, results, out)


def _bench_output(headers, rows, results, out) -> int:
    """A bench table on stdout, and with --out as markdown plus the raw JSON beside it."""
    import json

    from tabulate import tabulate

    md = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)
    print(md)
    if out:
        out.write_text(md + "\n")
        out.with_suffix(".json").write_text(json.dumps(results, indent=1))
        print(f"kbn: wrote {out} and {out.with_suffix('.json')}")
    return 0


def _bench_sweep(args, out) -> int:
    import tempfile

    from kbn.tools import bench
    from kbn.core.config import load_sweep

    load_sweep(args.sweep)  # a bad file fails here, in one line
    workers = [None if w == "auto" else _counts("sweep-workers", w)[0] for w in args.sweep_workers.split(",") if w]
    with tempfile.TemporaryDirectory(prefix="kbn-bench-sweep-") as scratch:
        results = bench.sweep_throughput(args.sweep, workers, scratch)
    headers, rows = bench.sweep_table(results)
    return _bench_output(headers, rows, results, out)


def _bench_compile(args, out) -> int:
    import tempfile

    from kbn.tools import bench

    with tempfile.TemporaryDirectory(prefix="kbn-bench-compile-") as scratch:
        results = bench.compile_share(args.compile, scratch, repeats=args.repeat)
    headers, rows = bench.compile_table(results)
    return _bench_output(headers, rows, results, out)


def cmd_tensorboard(args) -> int:
    from kbn.runs import tboard

    return tboard.serve(args.dir, all_runs=args.all, host=args.host, port=args.port)


def _pin_worker() -> None:
    """A local worker started by a chief that chose the number of workers runs on its own cores
    (KBN_WORKER_CPUS), with the backends' thread pools sized to them, so workers do not contend."""
    cpus = os.environ.get("KBN_WORKER_CPUS")
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    cores = {int(c) for c in cpus.split(",")}
    os.sched_setaffinity(0, cores)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(len(cores)))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def _no_empty_paths(args) -> None:
    """A folder or file given as '' would silently mean the current folder: refused, naming the option."""
    from kbn.core.errors import ConfigError

    for name in ("logdir", "dir", "compare_batch", "out", "from_csv", "file", "data_dir"):
        value = getattr(args, name, None)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{name}: got {value!r}; give a path (. for the current folder)")


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _pin_worker()  # before any backend starts its threads
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help, or a malformed argument already reported in one line
        return int(e.code or 0)
    from kbn.core import console
    from kbn.core.checks import check_choice
    from kbn.core.errors import ConfigError

    try:  # the library logs; this sets what of it is printed
        console.configure(check_choice("log", args.log_level, tuple(console.LEVELS)))
    except ConfigError as e:
        print(f"kbn: error: {e}", file=sys.stderr)
        return 2
    os.environ["KERAS_BACKEND"] = choose_backend(_archs_of(args))  # before anything imports Keras
    from kbn.core.errors import KbnError

    from kbn.core.errors import Interrupted

    if args.command in ("train", "sweep", "bench"):
        from kbn.core import startup

        startup.settle_backend()  # on TensorFlow: started now, its C++ start-up lines in a file
        from kbn.core import interrupts

        interrupts.install()  # Ctrl-C / SIGTERM stop training between steps, resumable
    try:
        _no_empty_paths(args)
        commands = {"train": cmd_train, "data": cmd_data, "sweep": cmd_sweep, "status": cmd_status,
                    "report": cmd_report, "export": cmd_export, "plot": cmd_plot, "bench": cmd_bench,
                    "tensorboard": cmd_tensorboard}
        return commands[args.command](args)
    except Interrupted as e:
        if not os.environ.get("KBN_CHIEF_PID"):  # a local worker's chief says it, once
            print(f"kbn: {e}", file=sys.stderr)
        return e.exit_code
    except KbnError as e:
        print(f"kbn: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("kbn: interrupted; run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

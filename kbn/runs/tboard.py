"""TensorBoard: the event files of a run, its HParams session, a sweep's HParams config, `kbn tensorboard`.
It must not know how a run trains or what a sweep searches: values in, event files out.

One TensorBoard run per training: the run folder itself, holding every scalar as `<split>/<axis>_<metric>`
(train/epoch_accuracy, validation/epoch_loss, test/epoch_accuracy, ...), where <axis> says what the
step counts (epoch, or optimizer step for runs that evaluate every K steps), and its HParams session.
Split sub-runs (train/, validation/, test/) would make four runs per training, the root one without
scalars: a sweep of 96 trainings became 384 runs, past the 40 that TensorBoard's Scalars page selects.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import time
from pathlib import Path

import numpy as np

# (TensorBoard split, metric, metrics.csv column)
SCALARS = (
    ("train", "loss", "loss"), ("train", "accuracy", "accuracy"), ("train", "learning_rate", "lr"),
    ("validation", "loss", "val_loss"), ("validation", "accuracy", "val_accuracy"),
    ("test", "loss", "test_loss"), ("test", "accuracy", "test_accuracy"),
)
AXES = {
    "epoch": "The step counts epochs: the value at step N was measured after epoch N.",
    "step": "The step counts optimizer steps (batches): the value at step N was measured after N steps.",
}
_WHAT = {"loss": "mean cross-entropy", "accuracy": "accuracy (fraction correct)", "learning_rate": "learning rate"}
_files = itertools.count()


def session_end(status):
    """The HParams session's end (its status), built as summary_v2 builds the start: tensorboard's
    own summary.session_end_pb uses TensorFlow's protos when TensorFlow is installed, which this
    writer's events cannot hold."""
    import time as _time

    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    from kbn.core import compat

    end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=_time.time())
    return compat.hparams_summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))


def outcome_scalars(kind: str) -> dict[str, float]:
    """The outcome's scalars: 1 for the run's unstable kind and for outcome/unstable, 0 elsewhere."""
    from kbn.core.stability import OUTCOMES

    out = {f"outcome/{k.replace(' ', '_')}": float(k == kind) for k in OUTCOMES[1:]}
    return {**out, "outcome/unstable": float(kind != "trained")}


OUTCOME_WHAT = {
    "diverged": "its training loss turned NaN/inf",
    "collapsed": "it learned, then fell below half of what it had learned above chance and stayed there",
    "never_learned": "its accuracy stayed at chance throughout",
    "unstable": "it diverged, collapsed or never learned",
}


def tag(split: str, metric: str, axis: str = "epoch") -> str:
    return f"{split}/{axis}_{metric}"


def description(split: str, metric: str, axis: str) -> str:
    where = "over the epoch's training batches" if split == "train" and axis == "epoch" else f"on the {split} set"
    return f"{_WHAT[metric].capitalize()} {where}. {AXES[axis]}"


class EventWriter:
    """A TensorBoard event file, written with tensorboard's protos and record framing alone.
    tensorboard's EventFileWriter opens files through tf.io.gfile, which imports all of TensorFlow
    when it is installed: seconds of start-up and absl/oneDNN lines on the JAX path."""

    def __init__(self, logdir: Path, axis: str = "epoch", suffix: str = ""):
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter  # crc32c in pure Python

        logdir.mkdir(parents=True, exist_ok=True)
        # TensorBoard reads a folder's event files in name order: a later file must sort after the others
        stamp = max([int(time.time())] + [int(f.name.split(".")[3]) + 1 for f in logdir.glob("events.out.tfevents.*")
                                          if f.name.split(".")[3].isdigit()])
        name = f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.{os.getpid()}.{next(_files)}{suffix}"
        self._records = RecordWriter(open(logdir / name, "wb"))
        self._axis, self._described = axis, set()
        self.add(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add(self, event) -> None:
        self._records.write(event.SerializeToString())

    def summary(self, summary, step: int = 0) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self.add(Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalars(self, values: dict[tuple[str, str], float | None], step: int) -> None:
        """values: {(split, metric): value}; None is not measured (not written)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        out = [self._value(split, metric, v) for (split, metric), v in values.items() if v is not None]
        if out:
            self.summary(Summary(value=out), step)

    def named(self, values: dict[str, float], step: int, described: dict[str, str]) -> None:
        """Scalars by their full tag; `described`: tag -> description, written with a tag's first value."""
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.scalar import metadata

        out = []
        for name, v in values.items():
            value = Summary.Value(tag=name, simple_value=float(v))
            if name not in self._described and name in described:
                value.metadata.CopyFrom(metadata.create_summary_metadata(name, described[name]))
                self._described.add(name)
            out.append(value)
        self.summary(Summary(value=out), step)

    def _value(self, split, metric, v):
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.scalar import metadata

        name = tag(split, metric, self._axis)
        value = Summary.Value(tag=name, simple_value=float(v))
        if name not in self._described:  # TensorBoard reads a tag's description from its first value
            value.metadata.CopyFrom(metadata.create_summary_metadata(name, description(split, metric, self._axis)))
            self._described.add(name)
        return value

    def preactivations(self, rows: list[dict], layers: dict, step: int, buckets: int) -> None:
        """Pre-activation percentiles (rows of runlog.preactivation_rows) as scalars, and each layer's
        values as a histogram (TensorBoard's Histograms and Distributions pages)."""
        from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

        values = [Summary.Value(tag=f"preactivation/{self._axis}_{r['layer']}_{r['scope']}_{q}",
                                simple_value=float(v)) for r in rows for q, v in r.items() if q.startswith("p")]
        for name, a in layers.items():
            a = np.asarray(a, np.float64).ravel()
            counts, edges = np.histogram(a, bins=buckets)
            histo = HistogramProto(min=float(a.min()), max=float(a.max()), num=float(a.size), sum=float(a.sum()),
                                   sum_squares=float(np.dot(a, a)), bucket_limit=edges[1:].tolist(),
                                   bucket=counts.astype(float).tolist())
            values.append(Summary.Value(tag=f"preactivation/{self._axis}_{name}", histo=histo))
        self.summary(Summary(value=values), step)

    def outcome(self, kind: str, step: int) -> None:
        """How the run ended (kbn.core.stability): 0/1 scalars outcome/<kind> for each unstable kind and
        outcome/unstable, which HParams shows as columns, and the session's end status: SUCCESS for a
        run that trained, FAILURE for one that diverged, collapsed or never learned (the dashboard's
        status filter then separates them)."""
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import api_pb2

        from tensorboard.plugins.scalar import metadata

        values = []
        for t, v in outcome_scalars(kind).items():
            value = Summary.Value(tag=t, simple_value=float(v))
            what = OUTCOME_WHAT[t.split("/", 1)[1]]
            value.metadata.CopyFrom(metadata.create_summary_metadata(
                t, f"How the run ended: 1 if {what}, else 0; written once, at its last evaluation. {AXES[self._axis]}"))
            values.append(value)
        self.summary(Summary(value=values), step)
        status = api_pb2.STATUS_SUCCESS if kind == "trained" else api_pb2.STATUS_FAILURE
        self.summary(session_end(status), step)

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


@dataclasses.dataclass
class HParams:
    """A run's HParams session. `session` names it and must be unique per training: TensorBoard shows
    the sessions of one name as one row with their metrics averaged. `experiment` (a Summary from
    hparams_config_pb) gives the domains and the metric columns; without it TensorBoard infers them."""

    values: dict
    session: str
    experiment: object | None = None

    def write(self, writer: EventWriter) -> None:
        from tensorboard.plugins.hparams import summary_v2

        if self.experiment is not None:
            writer.summary(self.experiment)
        writer.summary(summary_v2.hparams_pb(self.values, trial_id=self.session))


def run_hparams(settings: dict, session: str) -> HParams:
    """A single run's session (kbn train): its settings, seed as digits (see sweep_hparams)."""
    keys = ("dataset", "arch", "norm", "optimizer", "lr", "seed", "batch_size")
    return HParams({k: str(settings[k]) if k == "seed" else settings[k] for k in keys}, session)


# ---------------------------------------------------------------- a sweep's HParams


def sweep_lrs(sweep) -> list[float]:
    """Every learning rate the sweep can train: each coarse grid and the fine grid around each
    possible winner (which winner comes out is known only once the coarse trials ran)."""
    lrs = set(sweep.rates)  # the fixed-rate protocol's shared rate(s)
    for opt in sweep.optimizers:
        grid = sweep.coarse_grid(opt)
        lrs.update(grid)
        for best in grid:
            lrs.update(sweep.fine_grid(opt, best))
    return sorted(float(v) for v in lrs)


# HParams's dashboard shows the first five hparams (those that "differ" first, then by name) and the
# first five metrics: the columns a comparison reads
SHOWN = ("norm", "optimizer", "lr", "seed", "phase")


def sweep_experiment(sweep, lrs: list[float] | None = None):
    """The sweep's HParams config: every hparam as its discrete domain (`lrs`: the rates its runs
    trained; by default every rate it can train), the answer metrics first (kbn.sweep.summary), then
    accuracies, losses and outcomes. HParams has no log-scale interval (its Interval is min/max only;
    the dashboard's Logarithmic scale is a viewer's choice), so the learning rate is discrete:
    filterable value by value. The seed is given as digits: HParams knows only strings, bools and
    float64, and the dashboard prints every float64 to five digits (seed 0 as 0.0000)."""
    from tensorboard.plugins.hparams import plugin_data_pb2, summary_v2 as hp

    from kbn.core.config import PHASES

    axis = "step" if sweep.eval_every_steps else "epoch"
    hparams = [hp.HParam(k, hp.Discrete(list(getattr(sweep, k + "s")))) for k in ("dataset", "arch", "norm", "optimizer")]
    hparams += [hp.HParam("lr", hp.Discrete(lrs if lrs is not None else sweep_lrs(sweep)), display_name="learning rate"),
                hp.HParam("seed", hp.Discrete([str(s) for s in sweep.seeds])),
                hp.HParam("phase", hp.Discrete(list(PHASES)))]
    metrics = [hp.Metric(t, display_name=name, description=what) for t, (name, what) in answer_tags(axis).items()]
    metrics += [hp.Metric(tag(split, metric, axis), display_name=f"{split} {metric}",
                          description=description(split, metric, axis))
                for metric in ("accuracy", "loss") for split in ("test", "validation", "train")]
    metrics += [hp.Metric(t, display_name=t.replace("_", " "), description=f"1 when {OUTCOME_WHAT[t.split('/')[1]]}, "
                          "else 0 (kbn.core.stability's rule); logged once, at the run's end")
                for t in outcome_scalars("trained")]
    pb = hp.hparams_config_pb(hparams, metrics)
    data = plugin_data_pb2.HParamsPluginData.FromString(pb.value[0].metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in SHOWN
    pb.value[0].metadata.plugin_data.content = data.SerializeToString()
    return pb


def answer_tags(axis: str) -> dict[str, tuple[str, str]]:
    """The answer scalars' tags -> (display name, description): HParams shows them first."""
    unit = "epochs" if axis == "epoch" else "optimizer steps"
    return {
        "answer/test_diff_vs_none": ("test diff vs none (points)", "Final test accuracy minus that of the none arm of "
                                     "the same seed (dataset, network, optimizer), in percentage points; 0 for none."),
        "answer/val_auc": ("validation AUC (%)", "Area under the validation-accuracy curve: the mean validation "
                           "accuracy over the run's evaluations, in percent (the report's convergence AUC)."),
        f"answer/{axis}s_to_target": (f"{unit} to target", f"The first {axis} at which validation accuracy got 90% "
                                      "of the way from chance to the best of the none arm of the same seed (the "
                                      "report's speed-up rung); absent if never reached."),
    }


def sweep_hparams(sweep, cell, values: dict, session: str) -> HParams:
    """A sweep trial's session, named by its run folder's path under the sweep folder (the name
    `kbn tensorboard` gives its run). The sweep's config is the summary run's (kbn.sweep.summary):
    one per TensorBoard, with the rates the sweep trained."""
    v = {k: getattr(cell, k) for k in ("dataset", "arch", "norm", "optimizer")}
    v.update(lr=float(values["lr"]), seed=str(int(values["seed"])), phase=values["phase"])
    return HParams(v, session)


def layout_summary(categories):
    """A Custom Scalars layout (layout_pb2 Categories) as the summary that plugin reads, built
    without TensorFlow (its own summary.pb needs it)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata
    from tensorboard.util import tensor_util

    layout = layout_pb2.Layout(category=categories)
    value = Summary.Value(tag=metadata.CONFIG_SUMMARY_TAG,
                          tensor=tensor_util.make_tensor_proto(layout.SerializeToString()))
    value.metadata.CopyFrom(metadata.create_summary_metadata())
    return Summary(value=[value])


# ---------------------------------------------------------------- kbn tensorboard


def served_folder(logdir, all_runs: bool) -> Path:
    """A sweep's final runs (DIR/runs), or everything under DIR with --all (or when DIR has no runs/:
    a `kbn train` --logdir)."""
    from kbn.core.errors import ConfigError

    d = Path(logdir)
    if not d.is_dir():
        raise ConfigError(f"{logdir}: no such folder; give a sweep's folder (e.g. logs/smoke) or a kbn train --logdir")
    folder = d if all_runs or not (d / "runs").is_dir() else d / "runs"
    if not _has_events(folder):  # TensorBoard would serve an empty page without a word
        if folder != d and _has_events(d):
            raise ConfigError(f"{folder}: no TensorBoard event files (events.out.tfevents.*) of final runs; "
                              "add --all to serve the search trials")
        raise ConfigError(f"{logdir}: no TensorBoard event files (events.out.tfevents.*) to serve; give a sweep's "
                          "folder (e.g. logs/smoke) or a kbn train --logdir that holds runs")
    return folder


def _has_events(folder: Path) -> bool:
    return next(folder.rglob("events.out.tfevents.*"), None) is not None


def tensorboard_argv(logdir, all_runs: bool) -> tuple[list[str], str]:
    """TensorBoard's --logdir or --logdir_spec, and what it serves. Runs are named by their path
    under the sweep folder (runs/…, search/coarse/…, summary/<norm>) either way, the names their
    HParams sessions carry: without --all, the final runs and the summary run are served as the
    named groups `runs` and `summary` (a path with a comma cannot be a spec: the whole folder then)."""
    folder = served_folder(logdir, all_runs)
    d = Path(logdir).resolve()
    if folder == Path(logdir):
        return ["--logdir", str(d)], "every run"
    if "," in str(d):
        return ["--logdir", str(folder)], "the final runs (--all adds the search trials)"
    groups = [f"runs:{d / 'runs'}"] + ([f"summary:{d / 'summary'}"] if (d / "summary").is_dir() else [])
    return ["--logdir_spec", ",".join(groups)], "the final runs and the summary run (--all adds the search trials)"


PAGES = (("custom_scalars", "per cell, the norms side by side: seed means with their 95% bands (validation "
          "accuracy and loss) and pre-activation percentiles"),
         ("hparams", "one row per training: norm, optimizer, lr, seed, phase; the answer columns first "
          "(test diff vs none, validation AUC, steps to target)"),
         ("timeseries", "every run's own curves (filter run names by regex)"))


# the layout's URL: no smoothing (curves of a few points), only the summary runs selected
OPTIONS = {"custom_scalars": "&_smoothingWeight=0&regexInput=%5Esummary%2F"}


def _quiet_native() -> str:
    """TensorFlow's C++ lines go to a file from now on (kbn.core.console.native_lines_to_file), also those
    TensorBoard's server writes later. Returns the file's path."""
    import importlib.util

    from kbn.core import console

    path, _ = console.native_lines_to_file("tensorboard")
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow  # noqa: F401 - its start-up lines, now, into the file
    return path


def serve(logdir, all_runs: bool = False, host: str = "127.0.0.1", port: int = 6006) -> int:
    """TensorBoard on the sweep's runs, until Ctrl-C; it opens on the Custom Scalars layout."""
    from kbn.core.errors import ConfigError

    from kbn.core.config import check_address

    check_address(host, port)  # options first, then the folder; before TensorBoard: its errors are tracebacks
    where, what = tensorboard_argv(logdir, all_runs)
    native = _quiet_native()
    from tensorboard import default, program

    # Custom Scalars first: the page TensorBoard opens on, when a layout is there
    plugins = sorted(default.get_plugins(), key=lambda p: getattr(p, "__name__", "") != "CustomScalarsPlugin")
    tb = program.TensorBoard(plugins=plugins)
    # the Python loader: the Rust one (load_fast) drops the tags' descriptions, which say what the step counts
    tb.configure(argv=[None, *where, "--host", host, "--port", str(port), "--load_fast=false"])
    try:
        url = tb.launch()
    except program.TensorBoardServerException as e:
        raise ConfigError(f"port: cannot serve on {host}:{port} ({e.msg}); give another --port") from None
    print(f"kbn: TensorBoard serves {what} of {logdir} at {url}  (Ctrl-C stops it)", flush=True)
    layout = (Path(logdir) / "summary").is_dir()
    for page, shows in PAGES:
        if page != "custom_scalars" or layout:
            print(f"kbn:   {url}#{page}{OPTIONS.get(page, '')}  {shows}", flush=True)
    print(f"kbn: TensorFlow's own start-up lines: {native}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0

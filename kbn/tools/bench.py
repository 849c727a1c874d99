"""`kbn bench`: trial-epochs per second of plain `fit` (one trial at a time, Keras defaults), kbn's
fast single path (on JAX an epoch as compiled loops, kbn.training.jax_loop; on TensorFlow steps_per_execution)
and packed trials (K learning rates in one model; `seeds`:
K trials each with its own data order), per
architecture and norm, with peak memory. Each measurement runs in its own process, so its peak memory
is its own and the backend can differ. Data is random (speed does not depend on content), so this runs
where no dataset is installed, e.g. on a GPU host.
`compile_share`: a sweep's final runs as kbn trains them (real data), one per cell, each in a fresh
process with no compile cache, with the sweep's evaluation schedule and with one extra evaluation
only: their wall, training and compile seconds as the runs record them.
It measures speed only: it must not know sweeps' results, the report, or how a run is logged beyond
the seconds a run's metrics.csv holds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from kbn.core import console

EPOCH = 50_000  # times are reported per 50k-example epoch, the thesis's MNIST training split


def _setup(spec: dict, x, y, rng):
    """(model, its inputs, its targets, the data order as indices) for one measurement."""
    import keras
    import numpy as np

    from kbn import models
    from kbn.models import optimizers as optim
    from kbn.training.backend import fast_compile_args, fuse_batch_norm
    from kbn.models.packed import build_packed

    k, spe, n = spec["k"], spec["spe"], len(y)
    singles = []
    for _ in range(k):
        keras.utils.set_random_seed(0)
        singles.append(models.build(spec["arch"], x.shape[1:], norm=spec["norm"]))
    lrs = list(np.geomspace(1e-4, 1e-2, k)) if k > 1 else [1e-3]
    order = np.arange(n)[:, None]  # kbn's own loop takes the data order as indices into x
    if spec["variant"] == "packed":
        return build_packed(singles, lrs, "adam", steps_per_execution=spe).train, x, [y] * k, order
    if spec["variant"] == "seeds":  # each trial its own data order: indices gathered in the model
        model = build_packed(singles, lrs, "adam", steps_per_execution=spe, train_examples=x).train
        order = np.stack([rng.permutation(n) for _ in range(k)], axis=1)
        return model, order.astype(np.int32), [y[order[:, j]] for j in range(k)], order
    model = singles[0]
    kw = {} if spec["variant"] == "fit" else fast_compile_args(spe, model)
    if spec["variant"] != "fit":
        fuse_batch_norm(model)  # kbn's path: batch norm as one fused kernel on TensorFlow
    model.compile(optimizer=optim.make_optimizer("adam", 1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], **kw)
    return model, x, y, order


def _epoch_runner(spec: dict, model, x, y, inputs, target, order):
    """One epoch as kbn trains it (on JAX its compiled loop; `fit` for the baseline and on TensorFlow)."""
    from kbn.training.backend import keras_input, train_path
    from kbn.training.jax_loop import JaxPeriods

    path = train_path(model)
    if spec["variant"] != "fit" and path["loop"] == "kbn":
        own = spec["variant"] == "seeds"
        periods = JaxPeriods(model, None if own else x, y, spec["k"], own, 128, path["steps_per_call"])
        return lambda: periods.train(order, [], 0)
    given = {"x": inputs, "y": target, "batch_size": 128} if spec["variant"] == "fit" else \
        keras_input(inputs, target, 128)  # kbn's path: its own tf.data on TensorFlow
    return lambda: model.fit(**given, epochs=1, verbose=0, shuffle=False)


def layer_multiply_adds(model) -> list[int]:
    """Multiply-adds of one example's forward pass through each of `model`'s Conv and Dense layers, in
    layer order, from the built layers' shapes (nested models walked): a Dense layer's inputs × units
    (per position where it maps more than a vector), a convolution's output positions × its kernel
    (height × width × input channels per group × output channels). Norms, pooling and activations are
    left out: a few per cent of a CNN's arithmetic."""
    import math

    out = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out += layer_multiply_adds(layer)
        kernel = getattr(layer, "kernel", None)
        if kernel is None or not any(kind in type(layer).__name__ for kind in ("Conv", "Dense")):
            continue
        out.append(math.prod(layer.output.shape[1:-1]) * math.prod(kernel.shape))
    return out


def multiply_adds(model) -> int:
    """Multiply-adds of one example's forward pass (`layer_multiply_adds`, summed)."""
    return sum(layer_multiply_adds(model))


def train_flops(model, examples: int = EPOCH) -> float:
    """Floating-point operations of training on `examples` examples: 2 per multiply-add forward, and
    backward 2 for the weights' gradient and 2 for the inputs' gradient, which the first layer does not
    need (nothing learns below it: TensorFlow and XLA prune it), so 6 × MACs less 2 × the first's."""
    macs = layer_multiply_adds(model)
    return (6.0 * sum(macs) - 2.0 * (macs[0] if macs else 0)) * examples


def peak_flops(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> float | None:
    """This machine's measured matmul rate in FLOP/s, in the backend in use: the best of `repeats`
    compiled n×n products (2n³ each); None where the backend cannot multiply in `dtype` here."""
    import keras
    import numpy as np

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    try:
        if keras.backend.backend() == "jax":
            import jax
            import jax.numpy as jnp

            x, f = jnp.asarray(a, dtype), jax.jit(lambda u: u @ u)
            run = lambda: f(x).block_until_ready()  # noqa: E731
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            x, f = tf.cast(tf.constant(a), dtype), tf.function(lambda u: tf.matmul(u, u))
            run = lambda: f(x).numpy()  # noqa: E731
        else:
            return None
        run()
        best = min(_seconds(run) for _ in range(repeats))
    except Exception:  # noqa: BLE001 - no such dtype or kernel on this backend here
        return None
    return 2.0 * n**3 / best


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _device_peak_mb():
    """Peak accelerator memory in MB (JAX on a GPU), else None."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    dev = jax.devices()[0]
    return None if dev.platform == "cpu" else (dev.memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**20


def _child(spec: dict) -> dict:
    """One measurement, in this process: seconds per trial-epoch and peak memory."""
    import resource

    import keras
    import numpy as np

    from kbn import models
    from kbn.training.backend import enable_compile_cache, train_path

    enable_compile_cache()
    rng = np.random.default_rng(0)
    shape = (32, 32, 3) if spec["arch"] in ("deep_cnn",) else (28, 28, 1)
    x = rng.random((spec["examples"],) + shape, dtype=np.float32)
    y = rng.integers(0, 10, spec["examples"]).astype(np.int32)
    model, inputs, target, order = _setup(spec, x, y, rng)
    epoch = _epoch_runner(spec, model, x, y, inputs, target, order)
    times = [_seconds(epoch) for _ in range(spec["epochs"] + 1)]  # the first epoch compiles: not counted
    scale = EPOCH / spec["examples"] / spec["k"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    single = models.build(spec["arch"], shape, norm=spec["norm"])  # one trial's network, for its arithmetic
    return {**spec, "backend": keras.backend.backend(), "path": train_path(single)["loop"],
            "s_per_trial_epoch": statistics.median(times[1:]) * scale,
            "epochs_s": [round(t * scale, 3) for t in times[1:]], "loadavg": os.getloadavg()[0],
            "train_flops": train_flops(single), "peak_flops": peak_flops("float32"),
            "peak_flops_bf16": peak_flops("bfloat16"), "peak_mb": peak_mb, "device_peak_mb": _device_peak_mb()}


def _run_child(spec: dict, backend: str, timeout: int) -> dict | None:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        out = subprocess.run([sys.executable, "-m", "kbn.tools.bench", json.dumps(spec)], env=env, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "backend": backend, "error": f"over {timeout} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return {**spec, "backend": backend, "error": last[:120]}
    return json.loads(lines[-1])


def run(archs, norms, ks, backends, examples: dict, epochs: int = 2, spe: int = 50, timeout: int = 900,
        log=console.say, seed_ks=()) -> list[dict]:
    """Every measurement; the first backend also gets the packed variants (`seeds`: packed trials
    that each keep their own data order, for K in seed_ks)."""
    results = []
    for arch in archs:
        for norm in norms:
            plan = [(b, "fit", 1) for b in backends] + [(b, "fast", 1) for b in backends]
            plan += [(backends[0], "packed", k) for k in ks] + [(backends[0], "seeds", k) for k in seed_ks]
            for backend, variant, k in plan:
                spec = {"arch": arch, "norm": norm, "variant": variant, "k": k, "spe": spe, "epochs": epochs,
                        "examples": examples.get(arch, examples["default"])}
                r = _run_child(spec, backend, timeout)
                results.append(r)
                what = r.get("error") or (f"{r['s_per_trial_epoch']:.3f} s per trial-epoch ({r['path']}; "
                                          f"{' '.join(limit_cells(r)[4:5])} the limit, load {r['loadavg']:.1f}), "
                                          f"peak {r['peak_mb']:.0f} MB")
                log(f"bench {backend:<10} {arch:<8} {norm:<5} {variant:<6} K={k:<3} {what}")
    return results


def table(results: list[dict]) -> tuple[list[str], list[list]]:
    """Rows with trial-epochs per second and the ratio to plain fit (same backend, and TensorFlow's)."""
    base = {(r["backend"], r["arch"], r["norm"]): r["s_per_trial_epoch"]
            for r in results if r["variant"] == "fit" and "error" not in r}
    headers = ["backend", "arch", "norm", "variant", "K", "s / trial-epoch", "trial-epochs / s",
               "x fit (same backend)", "x fit (tensorflow)", "peak MB (host)", "peak MB (GPU)"] + LIMIT_HEADERS
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["backend"], r["arch"], r["norm"], r["variant"], r["k"], "error: " + r["error"]]
                        + [""] * (len(headers) - 6))
            continue
        s = r["s_per_trial_epoch"]
        same = base.get((r["backend"], r["arch"], r["norm"]))
        tf = base.get(("tensorflow", r["arch"], r["norm"]))
        rows.append([r["backend"], r["arch"], r["norm"], r["variant"], r["k"], f"{s:.4f}", f"{1 / s:.2f}",
                     f"{same / s:.2f}" if same else "", f"{tf / s:.2f}" if tf else "", f"{r['peak_mb']:.0f}",
                     "" if r.get("device_peak_mb") is None else f"{r['device_peak_mb']:.0f}"] + limit_cells(r))
    return headers, rows


LIMIT_HEADERS = ["path", "TFLOP / epoch", "peak GFLOP/s fp32 / bf16", "limit s (fp32)", "× the limit", "load"]


def limit_cells(r: dict) -> list[str]:
    """How far a measurement is from the arithmetic limit: its FLOPs per 50k-example epoch (the
    model's), the backend's measured matmul peak, the limit (FLOPs ÷ fp32 peak) and seconds ÷ limit;
    and the 1-minute load average when it ran (the machine is shared)."""
    flops, peak, bf16 = r.get("train_flops"), r.get("peak_flops"), r.get("peak_flops_bf16")
    if not flops or not peak:
        return [r.get("path", "")] + [""] * (len(LIMIT_HEADERS) - 1)
    limit = flops / peak
    return [r.get("path", ""), f"{flops / 1e12:.3f}", f"{peak / 1e9:.0f} / " + (f"{bf16 / 1e9:.0f}" if bf16 else "—"),
            f"{limit:.2f}", f"{r['s_per_trial_epoch'] / limit:.1f}×", f"{r.get('loadavg', float('nan')):.1f}"]


# ---------------------------------------------------------------- compile time in a run


def _run_child_config(settings: str, logdir: str) -> dict:
    """One kbn run of these settings, in this process: the seconds its last metrics.csv row records."""
    from kbn.core.config import TrainConfig
    from kbn.runs.runlog import read_metrics
    from kbn.training.train import train

    last = read_metrics(train(TrainConfig(**json.loads(settings)), logdir, verbose=False).folder)[-1]
    return {k: last[k] for k in ("step", "wall_time", "train_time", "compile_time")}


def compile_share(sweep_file: str, scratch, timeout: int = 3600, repeats: int = 1) -> list[dict]:
    """Per cell of a step-based sweep: its seed-0 final run (at the sweep's fixed rate, else the middle
    of its coarse grid) with the sweep's eval_steps and with only their first, each in a fresh process
    without a compile cache; the runs' wall, training and compile seconds. With `repeats` > 1 the whole
    set runs that many times, interleaved (a busy machine's load then falls on both schedules alike)."""
    import dataclasses
    from pathlib import Path

    from kbn.core.config import load_sweep
    from kbn.core.errors import ConfigError

    sweep = load_sweep(sweep_file)
    if not sweep.eval_every_steps or not sweep.eval_steps:
        raise ConfigError(f"sweep: {sweep_file} has no eval_steps; compile share compares its dense early "
                          "evaluations with one, so give a step-based sweep with eval_steps")
    out = []
    for repeat, cell in ((r, c) for r in range(repeats) for c in sweep.cells()):
        grid = sweep.coarse_grid(cell.optimizer)
        cfg = sweep.train_config(cell, sweep.rates[0] if sweep.lr is not None else grid[len(grid) // 2], 0, "final")
        for label, steps in (("the sweep's", cfg.eval_steps), ("one point", cfg.eval_steps[:1])):
            run = dataclasses.replace(cfg, eval_steps=steps)
            env = dict(os.environ, KBN_JAX_CACHE_DIR="off", TF_CPP_MIN_LOG_LEVEL="3")
            cmd = [sys.executable, "-m", "kbn.tools.bench", json.dumps(run.to_dict()), str(Path(scratch) / f"{len(out)}")]
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            base = {"cell": cell.key, "schedule": label, "evaluations": len(run.eval_points(run.total_steps)),
                    "repeat": repeat}
            out.append({**base, **json.loads(lines[-1])} if p.returncode == 0 and lines else
                       {**base, "error": (p.stderr.strip().splitlines() or ["no output"])[-1][:120]})
    return out


def compile_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per (cell, schedule): the median over its repeats of each seconds column (n repeats;
    the ratio to one point is of the medians)."""
    import statistics

    groups: dict = {}
    for r in results:
        groups.setdefault((r["cell"], r["schedule"]), []).append(r)
    med = {k: {c: statistics.median(r[c] for r in rs if "error" not in r) for c in ("wall_time", "train_time",
                                                                                      "compile_time")}
           for k, rs in groups.items() if any("error" not in r for r in rs)}
    headers = ["cell", "schedule", "evaluations", "n", "wall s", "train s", "compile s", "compile share",
               "wall × one point"]
    rows = []
    for (cell, schedule), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            rows.append([cell, schedule, str(rs[0]["evaluations"]), "0", "error: " + rs[0]["error"]] + [""] * 4)
            continue
        m, ref = med[(cell, schedule)], med.get((cell, "one point"))
        rows.append([cell, schedule, str(rs[0]["evaluations"]), str(len(ok)), f"{m['wall_time']:.1f}",
                     f"{m['train_time']:.1f}", f"{m['compile_time']:.1f}", f"{m['compile_time'] / m['wall_time']:.1%}",
                     f"{m['wall_time'] / ref['wall_time']:.3f}" if ref else "—"])
    return headers, rows


# ---------------------------------------------------------------- whole sweeps


def sweep_throughput(sweep_file: str, workers: list[int | None], scratch, data_env: dict | None = None) -> list[dict]:
    """Whole-sweep throughput: `kbn sweep FILE` run from scratch once per worker count (None: kbn's
    own choice), each in a fresh folder under `scratch`; trial-epochs per second, where a trial-epoch
    is one trial training one epoch of its (subset of the) training set, and the chosen learning rates."""
    from pathlib import Path

    from kbn.core.config import load_sweep
    from kbn.sweep.plan import planned_trials, trial_length
    from kbn.sweep.status import folder_progress
    from kbn.sweep.trials import records

    sweep = load_sweep(sweep_file)
    out = []
    for w in workers:
        logdir = Path(scratch) / f"workers-{w or 'auto'}"
        cmd = [sys.executable, "-m", "kbn", "sweep", sweep_file, "--logdir", str(logdir)]
        cmd += [] if w is None else ["--workers", str(w)]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(data_env or {})})
        seconds = time.perf_counter() - t0
        if p.returncode != 0:
            out.append({"workers": w, "error": (p.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        state = folder_progress(logdir)
        work = sum(trial_length(sweep, t.phase) for t in records(logdir))
        chose = next((line for line in p.stdout.splitlines() if "local worker(s):" in line), "")
        out.append({"workers": w, "chosen_workers": chose.split(" local worker")[0].split()[-1] if chose else str(w),
                    "trials": planned_trials(sweep, state.progress), "trial_epochs": work, "seconds": seconds,
                    "per_second": work / seconds, "chosen": {k: p_["chosen"] for k, p_ in state.progress.items()}})
    return out


def sweep_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["workers", "trials", "trial-epochs", "seconds", "trial-epochs / s", "× workers=1", "same chosen lrs"]
    base = next((r for r in results if r.get("workers") == 1 and "error" not in r), None)
    rows = []
    for r in results:
        name = "kbn's choice" if r["workers"] is None else str(r["workers"])
        if "error" in r:
            rows.append([name, "error: " + r["error"]] + [""] * 5)
            continue
        name += f" ({r['chosen_workers']})" if r["workers"] is None else ""
        rows.append([name, str(r["trials"]), str(r["trial_epochs"]), f"{r['seconds']:.1f}", f"{r['per_second']:.2f}",
                     f"{r['per_second'] / base['per_second']:.2f}" if base else "—",
                     ("yes" if r["chosen"] == base["chosen"] else "NO") if base else "—"])
    return headers, rows


if __name__ == "__main__":  # a child measurement: python -m kbn.tools.bench '<json spec>' [run folder]
    print(json.dumps(_child(json.loads(sys.argv[1])) if len(sys.argv) == 2 else _run_child_config(*sys.argv[1:])),
          flush=True)

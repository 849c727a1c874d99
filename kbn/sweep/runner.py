"""A sweep to its end: in this process (kbn.sweep.tuner's tuner), or served to workers (kbn.sweep.distribute's
chief). Above both: it only chooses between them, so neither imports the other's caller.
"""

from __future__ import annotations

from pathlib import Path

from kbn.core import console
from kbn.core.config import SweepConfig, check_address
from kbn.training.backend import default_pack
from kbn.sweep.distribute import auto_workers, check_workers, serve, set_distribution_env
from kbn.sweep.folder import check_components, prepare_folder, sweep_lock
from kbn.sweep.tuner import SweepTuner, announce, preflight, write_summary


def run_sweep(sweep: SweepConfig, logdir: Path, log=console.say, pack: int | None = None, workers: int | None = 1,
              sweep_file: str | None = None, host: str = "127.0.0.1", port: int | None = None) -> int:
    """Run a sweep to its end (or to its failed trials); returns the number of failed trials.

    workers: 1, this process trains every trial; N > 1, it serves the oracle as Keras Tuner's chief and
    starts N local workers (`sweep_file` is what they read); 0, it only serves (workers join from other
    machines); None, kbn chooses from the machine's cores and memory (kbn.sweep.resources) and says why."""
    logdir = Path(logdir)
    if workers != 1:
        check_address(host, port)
    with sweep_lock(logdir):
        prepare_folder(sweep, logdir)
        check_components(sweep, logdir)
        pack = pack or default_pack()
        datasets = preflight(sweep, pack)
        cores_each = None
        if workers is None:
            choice = auto_workers(sweep, datasets, pack)
            workers, cores_each = choice.workers, choice.cores_each
            log(f"kbn sweep: {workers} local worker(s): {choice.why} (--workers N overrides)")
        elif workers > 1:
            check_workers(workers, sweep, datasets, pack)
        if workers == 1:
            set_distribution_env(None)
            tuner = SweepTuner(sweep, logdir, log=log, pack=pack, datasets=datasets)
            announce(sweep, logdir, tuner.oracle, log)
            tuner.search()
            write_summary(logdir, log)  # rewritten on resume too
            return len(tuner.oracle.failed())
        failed = serve(sweep, logdir, sweep_file, workers, host, port, log, pack, datasets, cores_each)
        write_summary(logdir, log)
        return failed

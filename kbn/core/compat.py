"""The border to the private parts of Keras, Keras Tuner and TensorBoard: every use of `keras.src`,
`keras_tuner.src` or a private attribute of theirs is here, and nowhere else in kbn
(tests/test_compat.py scans kbn/ for that and fails on one outside this file).

Each function names the upstream file and name it reaches into; `CHECKED` says which distribution
and which versions each one was checked against (the source of both ends of the range read). Where
kbn copies or replaces upstream code, `FINGERPRINTS` holds a hash of that code as those versions
have it (`fingerprint`: the code's syntax tree, docstring left out, so a comment or reformatting
does not count): tests/test_compat.py recomputes it from the installed package and fails with one
line when it differs. Then re-read the upstream function against the note here and update both.

Nothing is imported at import time: kbn.training.backend and kbn.core.registry call here before Keras may load.
"""

from __future__ import annotations

import ast
import collections
import functools
import hashlib
import inspect
import textwrap
from pathlib import Path

KERAS, KERAS_TUNER, TENSORBOARD = ("keras", "3.10", "3.15"), ("keras-tuner", "1.4.7", "1.4.8"), \
    ("tensorboard", "2.20", "2.21")

# name here -> (distribution, lowest, highest version checked): a bound matches the versions it
# prefixes ("3.15" is 3.15.x)
CHECKED = {
    "oracle_class": KERAS_TUNER,
    "oracle_project_dir": KERAS_TUNER,
    "oracle_file": KERAS_TUNER,
    "oracle_trial_file": KERAS_TUNER,
    "oracle_has_retries": KERAS_TUNER,
    "oracle_reset_queues": KERAS_TUNER,
    "tuner_is_worker": KERAS_TUNER,
    "tuner_file": KERAS_TUNER,
    "run_and_update_trial": KERAS_TUNER,
    "add_oracle_service": KERAS_TUNER,
    "mark_tensorflow_absent": KERAS,
    "symbolic_build": KERAS,
    "layer_parents": KERAS,
    "layer_children": KERAS,
    "optimizer_lr_variable": KERAS,
    "per_variable_lr": KERAS,
    "hparams_summary": TENSORBOARD,
}

# upstream code kbn copies or replaces -> its fingerprints in the versions CHECKED (the same from 1.4.7 to
# 1.4.8, from keras 3.10.0 to 3.15.1: each read in the wheel; one per distinct code)
FINGERPRINTS = {
    # copied, patched: oracle_class().create_trial
    "keras_tuner Oracle.create_trial": {"064aa8caeb4de601"},
    # replaced by kbn.sweep.tuner.SweepOracle.reload, which rebuilds the state set_state restores (oracle_reset_queues)
    "keras_tuner Oracle.reload": {"8e263edf2d04f975"},
    "keras_tuner Oracle.set_state": {"fdad3c00da1f2d77"},
    # replaced: oracle_class()._save_trial (kbn writes trial files atomically)
    "keras_tuner Oracle._save_trial": {"4706bfad1454c6bc"},
    # copied, patched: per_variable_lr's _apply_weight_decay (the rate per trial)
    "keras BaseOptimizer._apply_weight_decay": {"5fdf9cb53025b666"},
}


def fingerprint(cls, name: str) -> str:
    """A hash of the code of method `name` as class `cls`'s source has it (decorated or not): its syntax
    tree without docstring, so comments and layout do not count."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    node = next(n for n in tree.body[0].body if isinstance(n, ast.FunctionDef) and n.name == name)
    if ast.get_docstring(node) is not None:
        node.body = node.body[1:]
    return hashlib.sha256(ast.dump(node).encode()).hexdigest()[:16]


def upstream_code() -> dict:
    """FINGERPRINTS' names -> (the installed upstream class, method name)."""
    from keras.src.optimizers import base_optimizer
    from keras_tuner.engine import oracle

    out = {f"keras_tuner Oracle.{m}": (oracle.Oracle, m) for m in ("create_trial", "reload", "set_state", "_save_trial")}
    out["keras BaseOptimizer._apply_weight_decay"] = (base_optimizer.BaseOptimizer, "_apply_weight_decay")
    return out


# ---------------------------------------------------------------- keras-tuner: the oracle

@functools.cache
def oracle_class():
    """keras_tuner.Oracle with kbn's create_trial (keras_tuner/src/engine/oracle.py, Oracle.create_trial,
    copied and patched) and trial files written by the subclass's `save_trial` (Oracle._save_trial, the
    hook create_trial and end_trial call). A subclass gives `new_trial_id()` and may hear of each trial
    handed out (`trial_started`); `asking` is the tuner id of the last create_trial call."""
    import keras_tuner as kt
    from keras_tuner.engine import trial as trial_module

    status = trial_module.TrialStatus

    class Oracle(kt.Oracle):
        asking = ""

        def new_trial_id(self) -> str:
            return f"{len(self.trials):04d}"

        def trial_started(self, trial, new: bool) -> None:
            """`trial` is handed out: a new one (new_trial_id's), or one to run again."""

        def save_trial(self, trial) -> None:
            trial.save(str(oracle_trial_file(self, trial.trial_id)))

        def _save_trial(self, trial):
            self.save_trial(trial)

        @kt.synchronized
        def create_trial(self, tuner_id):
            # keras-tuner's, except: the id is new_trial_id()'s (keras-tuner counts the trials it could
            # load, so one unreadable trial file made two trials share an id), a retried trial loses its
            # old message and is saved, `asking` is set for populate_space, trial_started is called, and
            # no max_trials, no Display (kbn prints its own line per trial).
            if tuner_id in self.ongoing_trials:
                return self.ongoing_trials[tuner_id]
            self.tuner_ids.add(tuner_id)
            self.asking = tuner_id
            if self._retry_queue:
                trial = self.trials[self._retry_queue.pop()]
                trial.status, trial.message = status.RUNNING, None
                self.trial_started(trial, new=False)
                self.ongoing_trials[tuner_id] = trial
                self._save_trial(trial)
                self.save()
                return trial
            trial_id = self.new_trial_id()
            response = self.populate_space(trial_id)
            hps = self.hyperparameters.copy()
            hps.values = response["values"] or {}
            trial = trial_module.Trial(hyperparameters=hps, trial_id=trial_id, status=response["status"])
            if trial.status == status.RUNNING:
                self.trial_started(trial, new=True)
                self._record_values(trial)
                self.ongoing_trials[tuner_id] = trial
                self.trials[trial_id] = trial
                self.start_order.append(trial_id)
                self._save_trial(trial)
                self.save()
            elif trial.status == status.STOPPED:
                self.tuner_ids.discard(tuner_id)
            return trial

    return Oracle


def oracle_project_dir(oracle) -> Path:
    """The Keras Tuner project folder (Oracle._project_dir, a property that creates it)."""
    return Path(oracle._project_dir)


def oracle_file(oracle) -> Path:
    """oracle.json (Oracle._get_oracle_fname)."""
    return Path(oracle._get_oracle_fname())


def oracle_trial_file(oracle, trial_id) -> Path:
    """trial_<id>/trial.json, its folder made (Oracle._get_trial_dir)."""
    return Path(oracle._get_trial_dir(trial_id)) / "trial.json"


def oracle_has_retries(oracle) -> bool:
    """Whether trials wait to run again (Oracle._retry_queue)."""
    return bool(oracle._retry_queue)


def oracle_reset_queues(oracle, retry_ids: list) -> None:
    """The private state Oracle.set_state restores, as for a fresh start: nothing run yet in this
    process, `retry_ids` waiting to run again (create_trial pops from the end), no values hashed."""
    oracle._run_times = collections.defaultdict(int)
    oracle._retry_queue = list(retry_ids)
    oracle._tried_so_far = set()
    oracle._id_to_hash = collections.defaultdict(lambda: None)


# ---------------------------------------------------------------- keras-tuner: the tuner, the gRPC service

def tuner_is_worker(tuner) -> bool:
    """Whether this process is a worker of a distributed search (BaseTuner._is_worker,
    keras_tuner/src/engine/base_tuner.py)."""
    return tuner._is_worker()


def tuner_file(tuner) -> Path:
    """The tuner's own state file, <tuner id>.json (BaseTuner._get_tuner_fname)."""
    return Path(tuner._get_tuner_fname())


def run_and_update_trial(tuner, trial) -> None:
    """run_trial, then its metrics to the oracle (BaseTuner._run_and_update_trial)."""
    tuner._run_and_update_trial(trial)


def add_oracle_service(server, oracle) -> None:
    """Serve `oracle` on the gRPC `server` as keras-tuner's chief does (keras_tuner/src/distribute/
    oracle_chief.py, OracleServicer; keras_tuner/src/protos): no public path to it, its own chief serves
    it only from inside a blocking search()."""
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    protos.get_service_grpc().add_OracleServicer_to_server(oracle_chief.OracleServicer(oracle), server)


# ---------------------------------------------------------------- keras

def mark_tensorflow_absent() -> None:
    """Tell Keras TensorFlow is not installed, unless something imported it already: the flag of
    keras/src/utils/module_utils.py's lazy `tensorflow` module (LazyModule._available)."""
    from keras.src.utils import module_utils

    if module_utils.tensorflow.module is None:
        module_utils.tensorflow._available = False


def symbolic_build(model, data_batch) -> None:
    """Build the model, its metrics and its optimizer from one batch without training, as fit and
    evaluate do first (keras/src/trainers/trainer.py, Trainer._symbolic_build)."""
    model._symbolic_build(data_batch=data_batch)


def layer_parents(layer) -> list:
    """The layers whose outputs `layer` is called on (keras/src/ops/operation.py, Operation._inbound_nodes)."""
    return [p.operation for n in layer._inbound_nodes for p in n.parent_nodes]


def layer_children(layer) -> list:
    """The layers called on `layer`'s output (Operation._outbound_nodes)."""
    return [n.operation for n in layer._outbound_nodes]


def optimizer_lr_variable(opt):
    """What the optimizer holds as its learning rate: a keras.Variable, or a schedule or callable
    (keras/src/optimizers/base_optimizer.py, BaseOptimizer._learning_rate); None where it has none."""
    return getattr(opt, "_learning_rate", None)


def per_variable_lr(base, lr_of_path):
    """A subclass of the optimizer class `base` whose learning rate for a variable is
    `lr_of_path(variable.path)` where that is not None (an array shaped like the variable), the
    optimizer's own elsewhere. update_step is handed that rate; weight decay (AdamW) uses it too:
    BaseOptimizer._apply_weight_decay copied with the rate patched. The TF backend hands update_step
    the raw tf.Variable: found through BaseOptimizer._get_variable_index and _trainable_variables."""
    from keras import ops

    class PerVariableLR(base):
        def _lr_of(self, variable):
            return lr_of_path(self._trainable_variables[self._get_variable_index(variable)].path)

        def update_step(self, gradient, variable, learning_rate):
            lr = self._lr_of(variable)
            if lr is not None:
                learning_rate = ops.convert_to_tensor(lr, dtype=variable.dtype)
            return super().update_step(gradient, variable, learning_rate)

        def _apply_weight_decay(self, variables):
            if self.weight_decay is None:
                return
            for variable in variables:
                if self._use_weight_decay(variable):
                    lr = ops.convert_to_tensor(self._lr_of(variable), dtype=variable.dtype)
                    wd = ops.cast(self.weight_decay, variable.dtype)
                    variable.assign(variable - variable * wd * lr)

    return PerVariableLR


# ---------------------------------------------------------------- tensorboard

def hparams_summary(tag: str, plugin_data):
    """The Summary proto holding HParams plugin data, as summary_v2 builds its own
    (tensorboard/plugins/hparams/summary_v2.py, _summary_pb)."""
    from tensorboard.plugins.hparams import summary_v2

    return summary_v2._summary_pb(tag, plugin_data)

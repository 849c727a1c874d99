"""A sweep: a learning-rate search per cell, then the chosen rate trained per seed, as one Keras Tuner
project that survives kill -9 and spreads over processes or machines.

Read-only, below the report: the folder's own files and its run folders' layout (folder), Keras
Tuner's trial files (trials), what is left to do (plan: pure functions over scores), the folder as
its files tell it and `kbn status` (status), `kbn.open_sweep` (view).
Running: the oracle and the tuner (oracle, tuner), one sweep over processes or machines (distribute,
resources), TensorBoard's summary runs (summary), and `run_sweep` (runner) above them all.
It must not know how the report computes its numbers.
"""

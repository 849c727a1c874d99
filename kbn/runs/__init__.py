"""A run's files: its folder (kbn.runs.runlog: config.json, metrics.csv, result.json, model.keras,
the checks of a folder that claims to be finished) and its TensorBoard event files, HParams and
`kbn tensorboard` (kbn.runs.tboard). Written by training, read by sweeps and reports.
It must not train or know sweeps.
"""

"""Training one run, or several packed (kbn.training.train): the path a network takes on this
machine and why (backend), kbn's compiled JAX loops (jax_loop), a conv net handed from a JAX process
to TensorFlow (handoff), Keras callbacks (callbacks) and batch norm's population statistics
(bn_stats). A list of TrainConfig in, logged runs out: it must not know sweeps or the report.
"""

"""The core every other room reads: kbn's error kinds (errors), the checks of a value a user types
(checks), every component kbn knows (registry), the settings of a run and of a sweep (config), the
terminal and kbn's log (console), where a run's seconds go and every ETA (clock), Ctrl-C as a flag
(interrupts), the one border to upstream private code (compat), how a run ended (stability), the
statistics of seeds (stats), your own components' contracts (contracts), what happens before Keras
is imported (startup: its backend, TensorFlow started quietly) and the version (version).
None of it imports Keras at load, data, a network, a run folder or a sweep: the core imports only
the core (tests/test_layers.py).
"""

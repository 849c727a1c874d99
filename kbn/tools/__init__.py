"""Tools around the study: `kbn bench` (kbn.tools.bench), the speed of every path against the
machine's arithmetic limit.
"""

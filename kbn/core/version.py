"""kbn's version, written here once: `kbn.__version__`, `kbn --version`, every run's config.json and
the package's metadata (pyproject.toml reads it) all take it from here."""

__version__ = "0.1.0"

"""The install (issue 24): one version, every direct import declared, extras that keep TensorFlow off a
JAX-only machine, a wheel with its licence and py.typed. `make check-jax-only` installs `kbn[jax]` into a
fresh venv and trains on it (README, Install)."""
import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import kbn
from kbn.cli import main

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(req).name).lower()


def _declared() -> dict[str, set[str]]:
    """Each declared distribution -> where: {"core"} or the extras naming it."""
    where = {}
    for req in PROJECT["dependencies"]:
        where.setdefault(_name(req), set()).add("core")
    for extra, reqs in PROJECT["optional-dependencies"].items():
        for req in reqs:
            where.setdefault(_name(req), set()).add(extra)
    return where


def _imported(folder: Path) -> dict[str, str]:
    """Top-level third-party modules imported anywhere under `folder` -> one file importing it."""
    local = {p.stem for p in folder.rglob("*.py")} | {"kbn", "tests"}
    found = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for top in {n.split(".")[0] for n in names} - local - set(sys.stdlib_module_names):
                found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_the_version_is_written_once(capsys):
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    written = [str(p.relative_to(ROOT)) for p in [ROOT / "pyproject.toml", *sorted((ROOT / "kbn").rglob("*.py"))]
               if kbn.__version__ in p.read_text()]
    assert written == ["kbn/core/version.py"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"kbn {kbn.__version__}\n"


@pytest.mark.parametrize("folder", ["kbn", "tests"])
def test_every_direct_import_is_declared(folder):
    dists = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {mod: f for mod, f in _imported(ROOT / folder).items()
               if not {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(mod, [mod])} & set(declared)}
    assert missing == {}, f"imported but not in pyproject.toml: {missing}"


def test_tensorflow_and_tfds_are_extras_and_the_jax_extra_pulls_neither():
    declared = _declared()
    assert declared["tensorflow"] == {"tensorflow"}
    assert declared["tensorflow-datasets"] == {"tfds"}
    assert declared["jax"] <= {"jax", "cuda"}
    assert not any(_name(r) in ("tensorflow", "tensorflow-datasets", "kbn") for r in PROJECT["optional-dependencies"]["jax"])
    assert {"jax", "cuda", "tensorflow", "tfds", "all", "test"} <= set(PROJECT["optional-dependencies"])


def test_nothing_points_outside_the_checkout():
    tests = [p for p in sorted((ROOT / "tests").glob("*.py")) if p.name != Path(__file__).name]
    for path in [ROOT / "pyproject.toml", ROOT / "Makefile", *tests]:
        text = path.read_text()
        assert "../shared" not in text and 'parent / "shared"' not in text, path


@pytest.mark.slow
def test_the_wheel_holds_its_licence_py_typed_one_version_and_extras(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("kbn-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "kbn/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    assert f"\nVersion: {kbn.__version__}\n" in meta and "\nLicense-Expression: MIT\n" in meta
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert core and not [r for r in core if _name(r.split(";")[0]) in ("tensorflow", "tensorflow-datasets", "jax")]


def test_the_constraints_pin_every_declared_distribution_inside_its_range():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    pins = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}
    reqs = [Requirement(r) for r in PROJECT["dependencies"] + sum(PROJECT["optional-dependencies"].values(), [])]
    outside = [str(r) for r in reqs if r.name != "kbn" and not r.extras  # jax[cuda12]: not on a CPU machine
               and not r.specifier.contains(pins.get(_name(str(r)), "absent"), prereleases=True)]
    assert outside == [], f"constraints.txt misses or contradicts: {outside}"

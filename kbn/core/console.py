"""The terminal a text output is printed on: its width, and prose and tables made to fit it.

Every text a researcher reads in a terminal (the report, status, progress lines) fits `width()`:
`COLUMNS` when set, else the tty's width, else 100 (a file, a pipe, a CI log).

The library says what it does through `logging.getLogger("kbn")` (`say`, `note`, `warn`); the CLI
sets how much of it is printed (`configure`, from `kbn --quiet` / `--verbose`). Printed, a record is
wrapped to the terminal: info on stdout, notes and warnings on stderr. A program that configures
logging itself gets the records through its own handlers instead; one that configures nothing (a
notebook) gets them printed as the CLI does.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import textwrap

from kbn.core.checks import check_choice

NOT_A_TTY = 100
NARROWEST = 40  # below this nothing tabular can be read anyway: fit to 40 and let the terminal wrap


def width(stream=None) -> int:
    """Columns available on `stream` (default stdout): COLUMNS, else the tty's size, else 100."""
    env = os.environ.get("COLUMNS", "")
    if env.strip().isdigit() and int(env) > 0:
        return max(NARROWEST, int(env))
    stream = stream or sys.stdout
    try:
        if stream.isatty():
            return max(NARROWEST, shutil.get_terminal_size((NOT_A_TTY, 24)).columns)
    except (AttributeError, ValueError, OSError):  # a closed or replaced stream
        pass
    return NOT_A_TTY


def wrap(text: str, cols: int, first: str = "", rest: str | None = None) -> str:
    """`text` wrapped to `cols` with a hanging indent (`first` before the first line, `rest` before
    the others; default: as many spaces as `first`). A word longer than a line (a path) is broken."""
    rest = " " * len(first) if rest is None else rest
    return textwrap.fill(text, cols, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False,
                         break_long_words=True)


LOGGER = logging.getLogger("kbn")
LEVELS = {"quiet": logging.WARNING, "info": logging.INFO, "verbose": logging.DEBUG}


class Terminal(logging.Handler):
    """Prints kbn's records as the terminal reads them: each line longer than `width()` wrapped, its
    continuation indented two spaces; info on the stdout of the moment (sys.stdout is looked up at each
    record, so a redirected or captured stream gets it), notes and warnings on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING or getattr(record, "stderr", False) else sys.stdout
        cols = width(stream)
        text = record.getMessage()
        try:
            print("\n".join(line if len(line) <= cols else wrap(line, cols, "", "  ") for line in text.splitlines()),
                  file=stream, flush=True)
        except (OSError, ValueError):  # a closed stream: nothing to tell
            pass


def configure(level: str = "info") -> None:
    """kbn's records printed by `Terminal` at `level` (LEVELS), and not passed on to the root logger
    (no second copy where a program configured logging). The CLI calls it; so does the first record of
    a process that configured no logging at all (kbn.configure_logging)."""
    check_choice("level", level, tuple(LEVELS))
    LOGGER.handlers[:] = [h for h in LOGGER.handlers if not isinstance(h, Terminal)] + [Terminal()]
    LOGGER.setLevel(LEVELS[level])
    LOGGER.propagate = False


def _record(level: int, message: str, **extra) -> None:
    if not LOGGER.handlers and not logging.getLogger().handlers:
        configure()  # nobody configured logging: print, as the command would
    LOGGER.log(level, message, extra=extra or None)


def say(message: str) -> None:
    """What kbn is doing (a trial's progress line, a sweep's opening): info, on stdout when printed."""
    _record(logging.INFO, message)


def note(message: str) -> None:
    """A side remark that must not mix with a command's output (data being prepared, a cache): info,
    on stderr when printed."""
    _record(logging.INFO, message, stderr=True)


def warn(message: str) -> None:
    """Something the user should know went differently than asked: a warning (stderr)."""
    _record(logging.WARNING, message)


def native_lines_to_file(name: str):
    """TensorFlow's C++ start-up lines (absl's "All log messages before absl::InitializeLog()", oneDNN,
    CUDA) go to a file: they write to file descriptor 2 directly, whatever TF_CPP_MIN_LOG_LEVEL says
    (TF 2.21). Python's own stderr (warnings, tracebacks, kbn's notes) stays on the terminal. Returns
    (the file's path, restore): restore() gives file descriptor 2 back to the terminal, so a C++ error
    later in the run is seen (TensorBoard's server never calls it: it writes such lines all along)."""
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"kbn-{name}-{os.getpid()}.log")
    sys.stderr.flush()
    terminal = os.dup(2)
    with open(path, "w") as native:
        os.dup2(native.fileno(), 2)
    before = sys.stderr
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1)

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(terminal, 2)
        sys.stderr = before

    return path, restore


def widest(text: str) -> int:
    """The widest line's width in columns (every character counts one: the reports print no
    double-width ones)."""
    return max((len(ln) for ln in text.splitlines()), default=0)


def fit_line(line: str, cols: int) -> str:
    """One line cut to `cols`: the middle gives way ('…'), since a line's start names what it is and
    its end says how far along it is."""
    if len(line) <= cols:
        return line
    keep = cols - 1
    head = keep * 2 // 3
    return line[:head] + "…" + line[len(line) - (keep - head):]


def stack(cell: str, sep: str = "; ") -> str:
    """A cell of '; '-separated parts, one part per line."""
    return cell.replace(sep, "\n")


def table(rows: list[list[str]], headers: list[str], cols: int, tablefmt: str = "simple", keys: int = 1) -> str:
    """An aligned table that fits `cols`: as it is when it fits; else its cells' '; '-parts stacked
    one per line and long headers wrapped; else its value columns in consecutive blocks, each
    repeating the `keys` leading columns that name a row; a column still too wide has its cells
    wrapped."""
    from tabulate import tabulate

    def draw(r, h):
        return tabulate(r, headers=h, tablefmt=tablefmt, disable_numparse=True)

    text = draw(rows, headers)
    if widest(text) <= cols:
        return text
    rows = [[stack(c) for c in r] for r in rows]
    # a header as wide as its column's cells (or its longest word): "final runs: mean validation
    # accuracy (%)" over cells of 5 characters wraps to lines of the cells' width
    cell_w = [max([widest(str(r[i])) for r in rows if i < len(r)] + [1]) for i in range(len(headers))]
    headers = [textwrap.fill(h, max(8, cell_w[i], *(len(w) for w in h.split())), break_long_words=False)
               for i, h in enumerate(headers)]
    text = draw(rows, headers)
    keys = min(keys, len(headers) - 1)
    if widest(text) <= cols or len(headers) <= keys + 1:
        return text if widest(text) <= cols else _wrapped(rows, headers, cols, draw, keys)

    def part(group):
        return [r[:keys] + [r[i] for i in group] for r in rows], headers[:keys] + [headers[i] for i in group]

    blocks, group = [], []
    for c in range(keys, len(headers)):
        if group and widest(draw(*part(group + [c]))) > cols:
            blocks.append(group)
            group = []
        group.append(c)
    blocks.append(group)
    out = []
    for g in blocks:
        text = draw(*part(g))
        out.append(text if widest(text) <= cols else _wrapped(*part(g), cols, draw, keys))
    return "\n\n".join(out)


def _wrapped(rows, headers, cols, draw, keys=1) -> str:
    """Every cell but the row's names wrapped to the width those leave."""
    key_w = sum(widest("\n".join([headers[k], *(r[k] for r in rows)])) + 2 for k in range(keys))
    n = max(1, len(headers) - keys)
    room = max(10, (cols - key_w) // n - 2)

    def cell(c):
        return "\n".join(textwrap.fill(line, room, break_on_hyphens=False) or "" for line in c.split("\n"))

    return draw([r[:keys] + [cell(c) for c in r[keys:]] for r in rows], headers[:keys] + [cell(h) for h in headers[keys:]])

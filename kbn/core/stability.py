"""How a run ended, read from its curve: it trained, it diverged (its loss turned NaN/inf), it
collapsed (it learned, then fell back and stayed down), or it never learned (at chance throughout).
Pure numbers in, an `Outcome` out: it must not know files, Keras, sweeps or reports.

Where training is hard (a deep network without a norm, a rate at the edge of stability) the
difference between two arms is often not a difference in accuracy but in whether training worked
at all; every reader of a run (result.json, status, the progress line, the report) says which.

The rule, on the accuracy at each evaluation (validation where recorded), with chance = 1 / classes:
- never learned: the best accuracy is within NEAR_CHANCE of the way from chance to 100 %
  (10 classes: at most 14.5 %);
- collapsed: after its best, the run fell below chance + KEEP x (best - chance) -- it lost more than
  half of what it had learned above chance, which takes in "fell to near chance" -- and stayed below
  to its last evaluation (a dip it recovers from, Adam + BN's jumps, is not a collapse); `fell_at` is
  the first evaluation of that final stretch;
- diverged: the training loss turned NaN/inf (the run stopped there).
"""

from __future__ import annotations

import dataclasses
import math

NEAR_CHANCE = 0.05  # "at chance": within 5 % of the way from chance to a perfect score
KEEP = 0.5  # a collapse keeps less than half of what the run had learned above chance
OUTCOMES = ("trained", "diverged", "collapsed", "never learned")
RULE = (f"never learned: best accuracy within {NEAR_CHANCE:.0%} of the way from chance to 100 %; collapsed: "
        f"fell after its best below chance + {KEEP:g} x (best - chance) and stayed there to the end; "
        "diverged: a NaN/inf training loss")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one run ended. Accuracies are fractions; `best_at`/`fell_at` are evaluation points (epochs
    or steps, as the run counts them)."""

    kind: str  # one of OUTCOMES
    chance: float
    best: float | None = None
    best_at: float | None = None
    fell_at: float | None = None  # collapsed: where it went down for good; diverged: where it stopped
    final: float | None = None
    split: str = "validation"

    @property
    def unstable(self) -> bool:
        """Diverged, collapsed or never learned: its final numbers are not those of a trained network."""
        return self.kind != "trained"

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "rule": RULE}

    @classmethod
    def from_dict(cls, d: dict) -> "Outcome":
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls) if f.name in d})

    def describe(self, axis: str = "epoch") -> str:
        """One phrase: 'collapsed after epoch 15 (best 96.0 % at epoch 15, 10.6 % at the end)'."""
        def at(x):
            return f"{axis} {_num(x)}"

        if self.kind == "trained":
            return "trained"
        if self.kind == "never learned":
            best = f" (best {100 * self.best:.1f} %)" if self.best is not None else ""
            return f"never learned{best}"
        if self.kind == "diverged":
            return f"diverged at {at(self.fell_at)}" if self.fell_at is not None else "diverged"
        return (f"collapsed after {at(self.fell_at)} (best {100 * self.best:.1f} % at {at(self.best_at)}, "
                f"{100 * self.final:.1f} % at the end)")


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def near_chance(chance: float) -> float:
    return chance + NEAR_CHANCE * (1 - chance)


def classify(points, accuracies, chance: float, diverged: bool = False, split: str = "validation") -> Outcome:
    """The Outcome of a run from its evaluations: `points` (epochs or steps, increasing) and the
    accuracy at each (fractions; None or NaN where not measured). `diverged`: its loss turned
    NaN/inf after the last point given."""
    curve = [(x, float(a)) for x, a in zip(points, accuracies) if a is not None and math.isfinite(float(a))]
    if not curve:
        return Outcome("diverged" if diverged else "never learned", chance, split=split,
                       fell_at=points[-1] if diverged and len(points) else None)
    best_i = max(range(len(curve)), key=lambda i: curve[i][1])  # the first best
    best_at, best = curve[best_i]
    final = curve[-1][1]
    common = dict(chance=chance, best=best, best_at=best_at, final=final, split=split)
    if diverged:
        return Outcome("diverged", fell_at=points[-1], **common)
    if best <= near_chance(chance):
        return Outcome("never learned", **common)
    floor = chance + KEEP * (best - chance)
    j = len(curve)
    while j > best_i + 1 and curve[j - 1][1] < floor:
        j -= 1
    if j < len(curve):
        return Outcome("collapsed", fell_at=curve[j][0], **common)
    return Outcome("trained", **common)


def of_rows(rows: list[dict], chance: float, diverged: bool, axis: str = "epoch") -> Outcome:
    """The Outcome of a run from its metrics.csv rows (kbn.runs.runlog.read_metrics): validation accuracy
    where it was evaluated, else training accuracy; `axis`: what its points count (epoch, or step for
    a run evaluated every K steps)."""
    split, col = ("validation", "val_accuracy") if any(r.get("val_accuracy") is not None for r in rows) \
        else ("train", "accuracy")
    return classify([r.get(axis) for r in rows], [r.get(col) for r in rows], chance, diverged, split)


def summarize(outcomes: list[Outcome], axis: str = "epoch", n: int | None = None) -> str:
    """The unstable runs of one arm in a phrase: '2 of 3 seeds collapsed after epoch 15–35, 1 never
    learned'; '' when every run trained. `n`: the arm's seeds, when `outcomes` are only some of them."""
    n = len(outcomes) if n is None else n
    parts = []
    for kind in OUTCOMES[1:]:
        these = [o for o in outcomes if o.kind == kind]
        if not these:
            continue
        text = f"{len(these)}" + (f" of {n} seed{'s' if n > 1 else ''}" if not parts else "") + f" {kind}"
        where = sorted(o.fell_at for o in these if o.fell_at is not None)
        if where and kind == "collapsed":
            span = _num(where[0]) if where[0] == where[-1] else f"{_num(where[0])}–{_num(where[-1])}"
            text += f" after {axis} {span}"
        elif where and kind == "diverged":
            span = _num(where[0]) if where[0] == where[-1] else f"{_num(where[0])}–{_num(where[-1])}"
            text += f" at {axis} {span}"
        parts.append(text)
    return ", ".join(parts)

"""kbn train's options come from TrainConfig's fields; a run's schedule as its own step (issue 14)."""

import dataclasses

import pytest

from kbn.cli import parser
from kbn.config import TrainConfig
from kbn.train import plan_schedule


def test_every_train_setting_is_an_option_with_its_default_and_help():
    train = parser()._subparsers._group_actions[0].choices["train"]
    options = {a.dest: a for a in train._actions}
    for field in dataclasses.fields(TrainConfig):
        action = options[field.name]
        assert action.option_strings == ["--" + field.name.replace("_", "-")]
        assert action.default == field.default and action.help == field.metadata["help"]
    defaults = parser().parse_args(["train"])
    assert {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)} == TrainConfig().to_dict()


def test_option_values_reach_the_config_typed():
    args = parser().parse_args(["train", "--lr", "0.5", "--batch-size", "60", "--eval-every-steps", "50",
                                "--test-every-epoch"])
    assert (args.lr, args.batch_size, args.eval_every_steps, args.test_every_epoch) == (0.5, 60, 50, True)
    assert isinstance(args.lr, float) and isinstance(args.batch_size, int)


@pytest.mark.parametrize("settings, n, expected", [
    ({"epochs": 3, "batch_size": 100}, 1050, (11, 33, 3, 11, None)),
    ({"eval_every_steps": 50, "total_steps": 200, "eval_steps": "log:10:100:4"}, 1000,
     (8, 200, 7, 4, [10, 22, 46, 50, 100, 150, 200])),
])
def test_schedule_periods_and_evaluation_points(settings, n, expected):
    s = plan_schedule(TrainConfig(**settings), n)
    assert (s.steps_per_epoch, s.total_steps, s.periods, s.period_steps, s.eval_at) == expected
    step = 0
    for p in range(s.periods):
        step += s.steps_of(p, step)
    assert step == s.total_steps

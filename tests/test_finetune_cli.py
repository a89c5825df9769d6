"""slpfast.finetune's command line and run() around the trainer: an option never becomes
another option's value, and a preempted run stops without evaluating."""
import os

import pytest

from slpfast import finetune


@pytest.mark.parametrize("argv,flag", [
    (["--results", "--train.steps=5"], "--results"),
    (["--init", "--eval-only"], "--init"),
    (["--task.results", "--task", "islr"], "--task.results"),
    (["--task", "islr", "--train.out_dir"], "--train.out_dir"),
])
def test_an_option_is_never_taken_as_the_previous_options_value(argv, flag):
    # `--results --train.steps=5` wrote the results to a file named "--train.steps=5" and
    # trained the default 200 steps, without a word
    with pytest.raises(ValueError, match=f"^{flag} needs a value"):
        finetune.parse_args(argv)
    assert finetune.main(argv) == 2


def test_values_that_start_with_one_dash_are_still_values():
    cfg = finetune.parse_args(["--task", "islr", "--train.seed", "3", "--optim.min_lr_ratio", "0.5"])
    assert cfg.train.seed == 3 and cfg.optim.min_lr_ratio == 0.5

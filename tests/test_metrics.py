"""The progress bar of a run with a time budget: its total and ETA follow the budget, not the step limit."""

import pytest
from tqdm import tqdm

from ponder.train.metrics import fit_to_time_budget


@pytest.mark.parametrize("start, done, seconds, minutes, total", [
    (2000, 10, 100.0, 200 / 60, 20),   # 10 s a step and 100 s left: 10 more steps
    (2000, 10, 100.0, 101 / 60, 11),   # a step begun before the budget runs out still finishes
    (2000, 10, 250.0, 200 / 60, 10),   # spent: ends at this step
    (2000, 10, 100.0, None, 2000),     # no budget: the step limit stands
    (2000, 0, 0.0, 1.0, 2000),         # nothing measured yet
    (2000, 10, 1.0, 60.0, 2000),       # the step limit comes first
    (30, 10, 20.0, 200 / 60, 100),     # faster than an earlier projection: the total grows back
])
def test_the_bar_total_is_the_step_the_time_budget_ends_at(start, done, seconds, minutes, total):
    bar = tqdm(total=start, initial=done, disable=True)
    fit_to_time_budget(bar, done, seconds, minutes, limit=2000)
    assert bar.total == total

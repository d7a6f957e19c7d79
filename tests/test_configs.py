"""Every config under configs/ loads with the trainer (or policy reader) its own header names:
a config a user copies from the README never fails on a field."""

import re
from pathlib import Path

import pytest

from ponder.config import load_config
from ponder.think.adaptive import AdaptivePolicy, load_policy
from ponder.train.grpo import GRPOConfig
from ponder.train.prm import PRMConfig
from ponder.train.revise import ReviseConfig
from ponder.train.sft import SFTConfig
from ponder.train.star import STaRConfig

CONFIGS = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.yaml"))
CLASSES = {"sft": SFTConfig, "grpo": GRPOConfig, "star": STaRConfig, "prm": PRMConfig, "orm": PRMConfig,
           "revise": ReviseConfig}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_shipped_config_loads_with_the_command_its_header_names(path):
    command = re.search(r"ponder (train (\w+)|eval scaling)", path.read_text())
    assert command, f"{path.name} does not say which command reads it"
    if command.group(2) is None:
        assert isinstance(load_policy(str(path)), AdaptivePolicy)
    else:
        load_config(CLASSES[command.group(2)], path)

import pytest
import torch
from transformers import LlamaForCausalLM

from ponder.model.configs import model_config
from ponder.model.tokenizer import build_char_tokenizer

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_thread():
    """A tiny model gains nothing from threads, and loses a lot when the cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory):
    """A randomly initialised ponder-micro saved as a Hugging Face model directory."""
    path = tmp_path_factory.mktemp("micro")
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(model_config("ponder-micro", len(tok)))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path

"""Growing a model wider or deeper keeps what it computes and gives its copies room to become different units."""

import pytest
import torch
from transformers import LlamaForCausalLM

from ponder import PonderError
from ponder.model.configs import model_config
from ponder.model.grow import deepen, widen
from ponder.model.loading import load_model


def micro(tied: bool = True, kv_heads: int | None = None) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = model_config("ponder-h64-l2-a4-f96", vocab_size=40)
    cfg.tie_word_embeddings = tied
    if kv_heads:
        cfg.num_key_value_heads = kv_heads
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # a trained model's norms are not all ones
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    return model.eval()


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("tied, kv_heads, hidden, heads, inter", [
    (True, None, 128, 8, 96), (True, None, 128, 8, 250), (False, None, 192, 12, 200), (True, 2, 128, 8, 192)])
def test_the_grown_model_gives_the_same_logits(tied, kv_heads, hidden, heads, inter):
    small = micro(tied, kv_heads)
    big = widen(small, hidden, heads, inter, noise=0.1)
    ids = torch.randint(7, 40, (3, 17))
    assert big.config.hidden_size == hidden and big.config.intermediate_size == inter
    assert sum(p.numel() for p in big.parameters()) > 2 * sum(p.numel() for p in small.parameters())
    torch.testing.assert_close(logits(big, ids), logits(small, ids), atol=2e-5, rtol=1e-4)


def test_the_command_writes_a_grown_model_that_loads_with_the_same_logits(tmp_path):
    from ponder.model.grow import main

    main(["built-in", "ponder-h512-l4-a8-f1600", str(tmp_path / "big")])
    small, tok, _ = load_model("built-in")
    loaded, _, _ = load_model(tmp_path / "big")
    assert loaded.config.hidden_size == 512 and loaded.config.intermediate_size == 1600
    ids = torch.tensor([tok.encode("Q: 12+7=?")])
    torch.testing.assert_close(logits(loaded, ids), logits(small, ids), atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("tied", [True, False])
def test_the_deepened_model_gives_the_same_logits_and_generates_the_same_with_its_cache(tied):
    small = micro(tied)
    deep = deepen(small, 6, noise=0.1)
    ids = torch.randint(7, 40, (2, 11))
    assert deep.config.num_hidden_layers == 6 and len(deep.model.layers) == 6
    torch.testing.assert_close(logits(deep, ids), logits(small, ids), atol=1e-5, rtol=1e-4)
    # each new layer knows its own place in the key-value cache, so cached decoding matches too
    assert [layer.self_attn.layer_idx for layer in deep.model.layers] == list(range(6))
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(deep.generate(ids, **kw), small.generate(ids, **kw))


def test_the_new_layers_start_silent_and_learn_apart():
    deep = deepen(micro(), 6, noise=0.05).train()
    ids = torch.randint(7, 40, (2, 9))
    deep(input_ids=ids, labels=ids).loss.backward()
    first, second = deep.model.layers[1].mlp.down_proj, deep.model.layers[2].mlp.down_proj  # copies of layer 0
    assert first.weight.abs().max() == 0 and second.weight.abs().max() == 0
    assert first.weight.grad.abs().max() > 0
    assert (first.weight.grad - second.weight.grad).abs().max() > 1e-3 * first.weight.grad.abs().max()


def test_a_depth_that_is_not_a_multiple_is_named():
    with pytest.raises(PonderError, match="3 layers must be a multiple of the model's 2"):
        deepen(micro(), 3)


def test_the_command_grows_wider_and_deeper_at_once(tmp_path):
    from ponder.model.grow import main

    main(["built-in", "ponder-h512-l8-a8-f1600", str(tmp_path / "big")])
    small, tok, _ = load_model("built-in")
    loaded, _, _ = load_model(tmp_path / "big")
    assert (loaded.config.hidden_size, loaded.config.num_hidden_layers) == (512, 8)
    ids = torch.tensor([tok.encode("Q: 12+7=?")])
    torch.testing.assert_close(logits(loaded, ids), logits(small, ids), atol=5e-5, rtol=1e-4)


def copied_rows_grads(noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    big = widen(micro(), 128, 8, 192, noise=noise).train()
    ids = torch.randint(7, 40, (2, 9))
    big(input_ids=ids, labels=ids).loss.backward()
    g = big.model.layers[0].mlp.gate_proj.weight.grad  # unit i and its copy i + 96 (each copied once)
    return g[:96], g[96:]


def test_copies_learn_apart_only_with_an_uneven_split():
    even = copied_rows_grads(0.0)
    torch.testing.assert_close(even[0], even[1])  # an even split would keep the copies one unit forever
    uneven = copied_rows_grads(0.05)
    assert (uneven[0] - uneven[1]).abs().max() > 1e-3 * uneven[0].abs().max()


@pytest.mark.parametrize("hidden, heads, inter, message", [
    (96, 6, 96, "multiple of the model's 64"),
    (128, 4, 96, "32 wide; the model's are 16"),
    (128, 8, 64, "below the model's 96")])
def test_sizes_it_cannot_grow_to_are_named(hidden, heads, inter, message):
    with pytest.raises(PonderError, match=message):
        widen(micro(), hidden, heads, inter)


@pytest.mark.parametrize("argv, message", [
    (["built-in", "ponder-h512-l6-a8-f1600"], "6 layers must be a multiple of the model's 4"),
    (["built-in", "ponder-512"], "unknown model config 'ponder-512'"),
    (["built-in", "ponder-h512-l4-a8-f1600", "--noise", "-1"], "noise must be >= 0")])
def test_the_command_refuses_bad_sizes_in_one_line(argv, message, tmp_path):
    from ponder.model.grow import main

    with pytest.raises(SystemExit) as e:
        main([argv[0], argv[1], str(tmp_path / "out"), *argv[2:]])
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


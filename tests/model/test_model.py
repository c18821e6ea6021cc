"""The DIR-7 backbone: presets, shapes, parameter counts, scan orders, adaLN-Zero start."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import dir7
from dir7.model import grow_into, grown_config, grown_layout, scan_permutation
from tests.helpers import randomize_zero_inits, tiny_config


def expected_parameters(cfg: dir7.DIR7Config) -> int:
    """Closed-form count from the architecture description (docs/design.md sections 2-3)."""
    D, Dq, C, p = cfg.dim, cfg.text_dim, cfg.conv_channels, cfg.patch_size
    hidden = int(cfg.mlp_ratio * D)

    def lora(rank, bias=True):
        return D * rank + rank * D + (D if bias else 0)

    def time_mix(layer_id):
        n = 6 * D + 4 * D * D  # mu, W_r, W_k, W_v, W_o
        n += lora(cfg.decay_lora) + lora(cfg.iclr_lora) + lora(cfg.gate_lora, bias=False)
        n += lora(cfg.value_lora) if layer_id > 0 else 0
        return n + 3 * D + 2 * D  # k_k, k_a, r_k (H x K = D), GroupNorm

    total = 0
    for i in range(cfg.depth):
        cross = time_mix(i) + Dq * D - (D * D if cfg.cross_mode == "paper" else 0)
        total += time_mix(i) + cross + (D + 2 * D * hidden) + (D * 9 * D + 9 * D)
        total += (2 * D * D + D) if i >= cfg.depth - cfg.depth // 2 else 0  # U-ViT skip projection
    total += 3 * C * 9 + C + C * D * p * p + D                  # conv stem + patchify
    total += 256 * D + D + D * D + D                            # timestep MLP
    total += 2 * Dq                                             # text LayerNorm
    total += 2 * D * D + 2 * D + D * p * p * C + p * p * C      # final adaLN + unpatchify
    total += C * 3 * 9 + 3                                      # conv decoder
    if cfg.pooled_text:
        total += Dq * D + D + D * D + D                         # pooled-text MLP into adaLN
    return total


@pytest.mark.parametrize("preset", ["dir7-demo", "dir7-s"])
@pytest.mark.parametrize("mode", ["prefix", "paper"])
@pytest.mark.parametrize("pooled_text", [False, True])
def test_presets_parameter_counts_and_shapes(preset, mode, pooled_text):
    cfg = dir7.DIR7Config.from_preset(preset, cross_mode=mode, pooled_text=pooled_text)
    model = dir7.DIR7Model(cfg)
    assert model.num_parameters() == expected_parameters(cfg)
    if preset == "dir7-demo":
        x = torch.randn(2, 3, cfg.image_size, cfg.image_size)
        with torch.no_grad():
            eps, states = model(x, torch.tensor([3, 900]), torch.randn(2, 9, cfg.text_dim), return_states=True)
        assert eps.shape == x.shape
        assert len(states) == cfg.depth
        assert all(s.shape == (2, cfg.n_heads, cfg.head_size, cfg.head_size) for s in states)


def test_dir7_h_counted_on_the_meta_device():
    cfg = dir7.DIR7Config.from_preset("dir7-h")
    with torch.device("meta"):
        model = dir7.DIR7Model(cfg)
    assert all(p.is_meta for p in model.parameters())
    assert model.num_parameters() == expected_parameters(cfg)
    assert (cfg.dim, cfg.depth, cfg.n_heads, cfg.patch_size) == (1024, 37, 16, 2)
    parts = dir7.count_parameters_by_part(model)
    assert parts["total"] == model.num_parameters()


def test_dir7_s_forward_at_full_size():
    cfg = dir7.DIR7Config.from_preset("dir7-s")
    assert (cfg.dim, cfg.depth, cfg.n_heads, cfg.patch_size) == (384, 13, 6, 2)
    model = dir7.DIR7Model(cfg)
    with torch.no_grad():
        eps = model(torch.randn(1, 3, 64, 64), torch.tensor([500]), torch.randn(1, 5, 384))
    assert eps.shape == (1, 3, 64, 64)


@pytest.mark.parametrize("pooled_text", [False, True])
def test_adaln_zero_start_outputs_exactly_zero_and_all_parameters_get_gradient(pooled_text):
    cfg = tiny_config(pooled_text=pooled_text)
    model = dir7.DIR7Model(cfg)
    x = torch.randn(2, 3, 16, 16)
    text = torch.randn(2, 5, cfg.text_dim)
    eps = model(x, torch.tensor([1, 999]), text)
    assert torch.count_nonzero(eps) == 0  # zero-initialised decoder conv: eps-MSE starts at 1
    # gradient spreads in from the output one layer per step: after a few steps every
    # parameter must receive some (a zero W_o under a zero gate would stay dead)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        opt.zero_grad()
        loss = (model(x, torch.tensor([1, 999]), text) - x).square().mean()
        loss.backward()
        opt.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert dead == []


def test_pooled_text_ignores_padding_and_starts_as_a_no_op():
    """The pooled path averages real tokens only; at init its output layer is zero, so it
    adds nothing until trained (what lets a warm start switch it on)."""
    cfg = tiny_config(pooled_text=True)
    torch.manual_seed(0)
    model = randomize_zero_inits(dir7.DIR7Model(cfg))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 700])
    text = torch.randn(2, 4, cfg.text_dim)
    padded = torch.cat([text, 100 * torch.randn(2, 3, cfg.text_dim)], dim=1)  # junk padding
    mask = torch.tensor([[True] * 4 + [False] * 3] * 2)
    with torch.no_grad():
        eps = model(x, t, text)
        torch.testing.assert_close(model(x, t, padded, mask), eps, rtol=1e-5, atol=1e-6)
        # the pooled path really carries the prompt: without it the output changes
        without = dataclasses.replace(cfg, pooled_text=False)
        plain = dir7.DIR7Model(without)
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("text_pool.")})
        assert (plain(x, t, text) - eps).abs().max() > 1e-4
        # at its zero initialisation the path is exactly a no-op
        torch.nn.init.zeros_(model.text_pool[2].weight)
        torch.nn.init.zeros_(model.text_pool[2].bias)
        assert torch.equal(model(x, t, text), plain(x, t, text))


@pytest.mark.parametrize("depth,extra", [(2, 2), (3, 4), (4, 2)])
@pytest.mark.parametrize("mode", ["prefix", "paper"])
def test_a_grown_model_computes_what_its_source_did_and_all_of_it_trains(depth, extra, mode):
    cfg = tiny_config(depth=depth, cross_mode=mode, scan_orders=("row", "col_reverse", "col"))
    torch.manual_seed(0)
    source = randomize_zero_inits(dir7.DIR7Model(cfg))  # a "trained" model: every path is live
    grown_cfg = grown_config(cfg, extra)
    layout = grown_layout(depth, extra)
    assert grown_cfg.depth == depth + extra == len(layout) == len(grown_cfg.scan_orders)
    assert sorted(i for i in layout if i is not None) == list(range(depth))
    for pos, old in enumerate(layout):  # every old block keeps its scan order
        if old is not None:
            assert grown_cfg.scan_orders[pos] == cfg.scan_orders[old % 3]
    grown = dir7.DIR7Model(grown_cfg)
    grow_into(source, grown)
    x, t, text = torch.randn(2, 3, 16, 16), torch.tensor([5, 700]), torch.randn(2, 4, cfg.text_dim)
    with torch.no_grad():
        assert torch.equal(grown(x, t, text), source(x, t, text))
    # the new blocks are not dead: after a few steps every parameter has had gradient
    opt = torch.optim.SGD(grown.parameters(), lr=0.1)
    for _ in range(4):
        opt.zero_grad()
        (grown(x, t, text) - x).square().mean().backward()
        opt.step()
    dead = [n for n, p in grown.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert dead == []


def test_growing_needs_an_even_count_and_the_grown_config():
    with pytest.raises(ValueError, match="even number"):
        grown_layout(7, 3)
    with pytest.raises(ValueError, match="even number"):
        grown_layout(7, 0)
    with pytest.raises(ValueError, match="depth >= 2"):
        grown_layout(1, 2)  # block 0 makes v_first for the others, so nothing may go before it
    assert grown_layout(7, 4) == [0, 1, 2, None, None, 3, None, None, 4, 5, 6]
    source = dir7.DIR7Model(tiny_config(depth=2))
    with pytest.raises(ValueError, match="scan_orders"):
        grow_into(source, dir7.DIR7Model(tiny_config(depth=4)))  # deeper, but not by growing
    with pytest.raises(ValueError, match="dim"):
        grow_into(source, dir7.DIR7Model(grown_config(tiny_config(depth=2, dim=48), 2)))


@pytest.mark.parametrize("order", dir7.model.SCAN_ORDERS)
def test_scan_orders_are_permutations(order):
    perm = scan_permutation(order, 5)
    assert sorted(perm.tolist()) == list(range(25))
    if order == "col":
        assert perm[:5].tolist() == [0, 5, 10, 15, 20]
    if order == "row_reverse":
        assert perm[0].item() == 24


def test_text_mask_defaults_and_bad_inputs():
    cfg = tiny_config()
    model = dir7.DIR7Model(cfg)
    x, t, text = torch.randn(1, 3, 16, 16), torch.tensor([5]), torch.randn(1, 4, cfg.text_dim)
    with torch.no_grad():
        assert torch.equal(model(x, t, text), model(x, t, text, torch.ones(1, 4, dtype=torch.bool)))
        assert torch.equal(model(x, 5, text), model(x, t, text))  # scalar timestep broadcasts
    with pytest.raises(ValueError, match="expected images"):
        model(torch.randn(1, 3, 8, 8), t, text)
    with pytest.raises(ValueError, match="text_states"):
        model(x, t, torch.randn(1, 4, cfg.text_dim + 1))


def test_paper_mode_model_rejects_prompts_longer_than_the_image():
    cfg = tiny_config(cross_mode="paper", image_size=8, patch_size=2)  # 16 image tokens
    model = dir7.DIR7Model(cfg)
    with pytest.raises(ValueError, match="paper mode"):
        model(torch.randn(1, 3, 8, 8), torch.tensor([5]), torch.randn(1, 17, cfg.text_dim))


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="unknown preset"):
        dir7.DIR7Config.from_preset("dir7-xl")
    with pytest.raises(ValueError, match="multiple of head_size"):
        dir7.DIR7Config(dim=100, head_size=64)
    with pytest.raises(ValueError, match="cross_mode"):
        dir7.DIR7Config(cross_mode="sideways")
    with pytest.raises(ValueError, match="unknown DIR7Config field"):
        dir7.DIR7Config.from_dict({"dimm": 3})
    cfg = tiny_config(scan_orders=["row", "col"])  # JSON gives lists
    assert dir7.DIR7Config.from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(cfg, depth=3).depth == 3

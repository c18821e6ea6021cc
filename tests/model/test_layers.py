"""RWKV-7 layers, the CrossWKV modes and cross-attention: the properties docs/design.md predicts."""

from __future__ import annotations

import pytest
import torch

from dir7 import ChannelMix, CrossWKV, TimeMix, wkv7_naive
from dir7.attention import CrossAttention
from tests.helpers import tiny_config

B, T, L, DQ = 2, 24, 7, 10


def make_cross(mode: str, **overrides) -> CrossWKV:
    cfg = tiny_config(cross_mode=mode, text_dim=DQ, **overrides)
    return CrossWKV(cfg, layer_id=1, n_layers=3).double()


def inputs():
    x = torch.randn(B, T, 64, dtype=torch.float64)
    text = torch.randn(B, L, DQ, dtype=torch.float64)
    mask = torch.ones(B, L, dtype=torch.bool)
    v_first = torch.randn(B, T, 64, dtype=torch.float64)
    return x, text, mask, v_first


def test_paper_mode_text_does_not_reach_positions_past_the_prompt():
    """r = Linear(pad(q)) has no bias, so r_t = 0 for t >= L: those outputs ignore the text."""
    layer = make_cross("paper")
    x, text, mask, v_first = inputs()
    out1, _, _ = layer(x, text, mask, v_first)
    out2, _, _ = layer(x, torch.randn_like(text), mask, v_first)
    assert torch.equal(out1[:, L:], out2[:, L:])
    assert not torch.allclose(out1[:, :L], out2[:, :L])


def test_prefix_mode_text_reaches_every_position():
    layer = make_cross("prefix")
    x, text, mask, _ = inputs()
    v_first = torch.randn(B, L + T, 64, dtype=torch.float64)  # prefix mode: text + image values
    out1, _, _ = layer(x, text, mask, v_first)
    out2, _, _ = layer(x, torch.randn_like(text), mask, v_first)
    assert out1.shape == (B, T, 64)
    per_position = (out1 - out2).abs().amax(dim=(0, 2))
    assert (per_position > 1e-8).all()


def test_paper_mode_rejects_text_longer_than_the_image():
    layer = make_cross("paper")
    x, _, _, _ = inputs()
    text = torch.randn(B, T + 1, DQ, dtype=torch.float64)
    with pytest.raises(ValueError, match="paper mode pads the text"):
        layer(x, text, torch.ones(B, T + 1, dtype=torch.bool))


def test_state_mode_every_image_token_reads_the_whole_unfaded_text_state():
    """o_t = S_L^T r_t: the state of the text alone, the same for every image position, not
    decayed or written by the image tokens; the text reaches every position."""
    layer = make_cross("state")
    x, text, mask, _ = inputs()
    v_first = torch.randn(B, L, 64, dtype=torch.float64)  # state mode: the text's values only
    out1, vf, S = layer(x, text, mask, v_first)
    out2, _, _ = layer(x, torch.randn_like(text), mask, v_first)
    assert out1.shape == (B, T, 64) and vf is v_first and S.shape == (B, 4, 16, 16)
    assert ((out1 - out2).abs().amax(dim=(0, 2)) > 1e-8).all()
    # the state is the text's own scan, whatever the image holds
    _, _, S_other = layer(torch.randn_like(x), text, mask, v_first)
    assert torch.equal(S, S_other)
    prefix = layer.text_in(text)
    _, w, k, v, a, b, _, _ = layer.project(prefix, v_first, keep=mask)
    _, S_ref = wkv7_naive(torch.zeros_like(k), w, k, v, a, b, output_final_state=True)
    assert torch.allclose(S, S_ref, atol=1e-10)
    # an image token's output depends on its own (token-shifted) input only, not on later tokens
    x2 = x.clone()
    x2[:, 10:] = torch.randn_like(x2[:, 10:])
    out3, _, _ = layer(x2, text, mask, v_first)
    assert torch.allclose(out3[:, :10], out1[:, :10], atol=1e-12) and not torch.allclose(out3[:, 11:], out1[:, 11:])


def test_cross_attention_reads_the_text_at_every_position_and_has_no_state():
    cfg = tiny_config(cross_mode="attention", text_dim=DQ)
    layer = CrossAttention(cfg, 1, 3).double()
    x, text, mask, _ = inputs()
    out1, vf, state = layer(x, text, mask, None)
    out2, _, _ = layer(x, torch.randn_like(text), mask, None)
    assert out1.shape == (B, T, 64) and vf is None and state is None
    assert ((out1 - out2).abs().amax(dim=(0, 2)) > 1e-8).all()
    with pytest.raises(ValueError, match="no recurrent state"):
        layer(x, text, mask, None, output_final_state=True)


@pytest.mark.parametrize("mode", ["paper", "prefix", "state", "attention"])
def test_text_mask_is_honoured(mode):
    """Padding tokens change nothing: masked states are ignored, and padding a prompt to a
    longer length gives the same outputs and final state as the unpadded prompt."""
    if mode == "attention":
        layer = CrossAttention(tiny_config(cross_mode=mode, text_dim=DQ), 1, 3).double()
    else:
        layer = make_cross(mode)
    with_state = mode != "attention"
    x, text, _, _ = inputs()
    short = text[:, :4]
    out_short, _, S_short = layer(x, short, torch.ones(B, 4, dtype=torch.bool), output_final_state=with_state)
    mask = torch.zeros(B, L, dtype=torch.bool)
    mask[:, :4] = True
    junk = text.clone()
    junk[:, 4:] = 100 * torch.randn(B, L - 4, DQ, dtype=torch.float64)
    out_pad, _, S_pad = layer(x, junk, mask, output_final_state=with_state)
    assert torch.allclose(out_pad, out_short, atol=1e-10)
    if with_state:
        assert torch.allclose(S_pad, S_short, atol=1e-10)


def test_time_mix_first_layer_defines_v_first_and_later_layers_use_it():
    cfg = tiny_config()
    first, later = TimeMix(cfg, 0, 3), TimeMix(cfg, 1, 3)
    assert first.v_lora is None and later.v_lora is not None
    x = torch.randn(B, T, 64)
    out, v_first, _ = first(x)
    assert out.shape == x.shape and v_first.shape == x.shape
    out_a, v_same, _ = later(x, v_first)
    assert v_same is v_first
    out_b, _, _ = later(x, v_first + 1.0)
    assert not torch.allclose(out_a, out_b)


def test_time_mix_is_causal():
    """A change at position 10 cannot move outputs before it (the scan is unidirectional)."""
    layer = TimeMix(tiny_config(), 1, 3).double()
    x = torch.randn(1, T, 64, dtype=torch.float64)
    v_first = torch.randn(1, T, 64, dtype=torch.float64)
    y = x.clone()
    y[:, 10] += 1.0
    out_x, _, _ = layer(x, v_first)
    out_y, _, _ = layer(y, v_first)
    assert torch.equal(out_x[:, :10], out_y[:, :10])
    assert not torch.allclose(out_x[:, 10:], out_y[:, 10:])


def test_rwkv7_init_versus_paper_xavier_init():
    rwkv = TimeMix(tiny_config(init="rwkv7"), 1, 4)
    xav = TimeMix(tiny_config(init="xavier"), 1, 4)
    # RWKV-7's recipe: token shift on, removal key scale ~0.71, k_a ~1.02, r_k ~-0.04
    assert rwkv.mu.abs().sum() > 0 and torch.allclose(rwkv.k_a, torch.full_like(rwkv.k_a, 1.02))
    assert (rwkv.r_k == -0.04).all() and (rwkv.k_k > 0.6).all()
    # the paper's Xavier-only init leaves them at zero (docs/design.md section 2)
    for p in (xav.mu, xav.k_k, xav.k_a, xav.r_k):
        assert torch.count_nonzero(p) == 0
    x = torch.randn(2, T, 64)
    for layer in (rwkv, xav):
        out, _, _ = layer(x, torch.randn(2, T, 64))
        assert torch.isfinite(out).all()


def test_decay_stays_in_rwkv7_range(monkeypatch):
    """w = -0.6065 * sigmoid(.) whatever the input: decays in (0.545, 1)."""
    import dir7.rwkv7 as rwkv7_module

    layer = TimeMix(tiny_config(), 1, 3)
    captured = {}
    original = rwkv7_module.wkv7

    def spy(r, w, *rest, **kw):
        captured["w"] = w
        return original(r, w, *rest, **kw)

    monkeypatch.setattr(rwkv7_module, "wkv7", spy)
    layer(100 * torch.randn(2, T, 64), torch.randn(2, T, 64))
    w = captured["w"]
    assert (w < 0).all() and (w > -0.6066).all()


def test_channel_mix_shape_and_shift():
    layer = ChannelMix(tiny_config(), 0, 2)
    x = torch.randn(2, T, 64)
    assert layer(x).shape == x.shape
    assert layer.key.out_features == 4 * 64


@pytest.mark.parametrize("layer_id", [0, 1])
@pytest.mark.parametrize("mode", [None, "paper"])
def test_fused_and_lerped_products_agree_in_value_and_gradient(layer_id, mode):
    """The GPU's one-product form of the token-shifted projections equals the lerps' form (CPU)."""
    cfg = tiny_config(cross_mode=mode or "prefix", text_dim=DQ)
    layer = (TimeMix if mode is None else CrossWKV)(cfg, layer_id=layer_id, n_layers=3).double()
    with torch.no_grad():
        layer.mu.uniform_(-0.5, 1.5)  # well away from the init's values, and outside [0, 1]
    names = tuple(layer._first_matrices())
    x = torch.randn(B, 13, 64, dtype=torch.float64, requires_grad=True)
    fused, lerped = layer._products_fused(x, names), layer._products_lerped(x, names)
    cot = {n: torch.randn_like(fused[n]) for n in names}
    grads = []
    for out in (fused, lerped):
        loss = sum((out[n] * cot[n]).sum() for n in names)
        grads.append(torch.autograd.grad(loss, [x, *layer.parameters()], allow_unused=True))
    for n in names:
        torch.testing.assert_close(fused[n], lerped[n])
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)

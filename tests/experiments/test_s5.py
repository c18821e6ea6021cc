"""dir7.s5: the S5 state-tracking experiment (data, models, a few training steps)."""

import dataclasses
import json
import random

import pytest
import torch

from dir7 import wkv7_naive
from dir7.experiments import s5


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models: extra threads only contend with other work on a shared CPU (10-50x slower there)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_group_table_is_s5():
    perms = s5.permutations()
    table = s5.multiplication_table()
    assert len(perms) == s5.N_ELEMENTS == 120
    assert perms[0] == (0, 1, 2, 3, 4)  # identity first
    # identity is neutral, every row is a permutation of the elements (a Latin square)
    assert torch.equal(table[0], torch.arange(120)) and torch.equal(table[:, 0], torch.arange(120))
    assert all(len(set(row.tolist())) == 120 for row in table)
    # S5 is not commutative: the task is not a running sum
    assert not torch.equal(table, table.t())


def test_prefix_products_match_reference_composition():
    perms = s5.permutations()
    table = s5.multiplication_table()
    x, y = s5.sample_batch(8, 20, table, torch.Generator().manual_seed(0))
    for b in range(x.shape[0]):
        acc = tuple(range(5))
        for t in range(x.shape[1]):
            p = perms[x[b, t]]
            acc = tuple(p[acc[i]] for i in range(5))  # apply the new permutation after the product so far
            assert perms[y[b, t]] == acc


def test_reference_product_acts_on_a_list():
    # the label permutes a list exactly as applying the permutations one by one does
    perms = s5.permutations()
    table = s5.multiplication_table()
    rng = random.Random(0)
    xs = [rng.randrange(120) for _ in range(10)]
    items = list("abcde")
    moved = items
    for i in xs:
        moved = [moved[perms[i].index(j)] for j in range(5)]  # item at j moves to p[j]
    y = s5.prefix_products(torch.tensor([xs]), table)[0, -1].item()
    assert [items[perms[y].index(j)] for j in range(5)] == moved


@pytest.mark.parametrize("name", s5.MODELS)
def test_forward_shapes_and_causality(name):
    torch.manual_seed(0)
    cfg = s5.S5Config(dim=32, depth=2, head_size=16)
    model = s5.build_model(name, cfg).eval()
    x = torch.randint(0, 120, (3, 12))
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (3, 12, 120)
        assert torch.isfinite(logits).all()
        # changing a late token must not change earlier predictions
        x2 = x.clone()
        x2[:, 8] = (x2[:, 8] + 1) % 120
        assert torch.allclose(model(x2)[:, :8], logits[:, :8], atol=1e-5)
        # and the models run on lengths never seen in training
        assert model(torch.randint(0, 120, (2, 40))).shape == (2, 40, 120)


def test_diagonal_variant_has_no_delta_rule():
    torch.manual_seed(0)
    rcfg = s5.rwkv_config(s5.S5Config(dim=32, depth=1, head_size=16))
    layer = s5.DiagonalTimeMix(rcfg, 0, 1)
    assert "k_k" not in dict(layer.named_parameters())  # nothing can train it away from zero
    assert torch.count_nonzero(layer.k_k) == 0
    # with a = b = 0 the layer's state equals the purely diagonal recurrence; the full
    # layer's differs (same weights, learned k_k restored)
    full = s5.build_model("rwkv7", s5.S5Config(dim=32, depth=1, head_size=16)).blocks[0].time_mix
    full.load_state_dict(layer.state_dict(), strict=False)
    with torch.no_grad():
        full.k_k.fill_(0.7)
        x = torch.randn(2, 10, 32)
        _, _, s_diag = layer(x, None, output_final_state=True)
        _, _, s_full = full(x, None, output_final_state=True)
    assert not torch.allclose(s_diag, s_full, atol=1e-4)
    # a = b = 0 through wkv7_naive reproduces the diagonal layer's state when fed its own r, w, k, v
    B, T, H, K = 1, 6, 2, 4
    g = torch.Generator().manual_seed(1)
    r, k, v = (torch.randn(B, T, H, K, generator=g) for _ in range(3))
    w = -torch.rand(B, T, H, K, generator=g)
    zero = torch.zeros_like(r)
    _, S = wkv7_naive(r, w, k, v, zero, zero, output_final_state=True)
    S_ref = torch.zeros(B, H, K, K)
    for t in range(T):
        S_ref = torch.exp(w[:, t])[..., None] * S_ref + k[:, t, :, :, None] * v[:, t, :, None, :]
    assert torch.allclose(S, S_ref, atol=1e-5)


def test_diagonal_variant_passes_zero_a_and_b_to_the_kernel(monkeypatch):
    # guards the k_k = 0 trick against changes in TimeMix.mix: record what reaches wkv7
    import dir7.rwkv7

    seen = {}
    real = dir7.rwkv7.wkv7

    def spy(r, w, k, v, a, b, **kw):
        seen.update(a=a, b=b, w=w, k=k)
        return real(r, w, k, v, a, b, **kw)

    monkeypatch.setattr(dir7.rwkv7, "wkv7", spy)
    rcfg = s5.rwkv_config(s5.S5Config(dim=32, depth=2, head_size=16))
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        s5.DiagonalTimeMix(rcfg, 1, 2)(x, torch.randn(2, 9, 32))
    assert torch.count_nonzero(seen["a"]) == 0 and torch.count_nonzero(seen["b"]) == 0
    assert (seen["w"] < 0).all() and torch.count_nonzero(seen["k"]) > 0  # decay and write stay on
    with torch.no_grad():
        s5.build_model("rwkv7", s5.S5Config(dim=32, depth=1, head_size=16))(torch.randint(0, 120, (1, 5)))
    assert torch.count_nonzero(seen["a"]) > 0  # the full layer does use the delta rule


def test_reflecting_variant_doubles_the_removal_so_the_transition_can_reflect(monkeypatch):
    import dir7.rwkv7

    seen = []
    real = dir7.rwkv7.wkv7

    def spy(r, w, k, v, a, b, **kw):
        seen.append((a, b))
        return real(r, w, k, v, a, b, **kw)

    monkeypatch.setattr(dir7.rwkv7, "wkv7", spy)
    rcfg = s5.rwkv_config(s5.S5Config(dim=32, depth=2, head_size=16))
    torch.manual_seed(0)
    plain = dir7.rwkv7.TimeMix(rcfg, 1, 2)
    torch.manual_seed(0)
    reflect = s5.ReflectingTimeMix(rcfg, 1, 2)
    x, v_first = torch.randn(2, 9, 32), torch.randn(2, 9, 32)
    with torch.no_grad():
        plain(x, v_first)
        reflect(x, v_first)
    (a1, b1), (a2, b2) = seen
    assert torch.equal(a1, a2) and torch.allclose(b2, 2 * b1)
    # along the unit removal key kk = -a the transition keeps 1 - (kk . b): RWKV-7 stays in
    # (0, 1), the reflecting variant goes below zero wherever eta > 1/2
    keep_plain, keep_reflect = 1 + (a1 * b1).sum(-1), 1 + (a2 * b2).sum(-1)
    assert (keep_plain > 0).all() and (keep_reflect < 0).any()


def test_parameter_counts_are_comparable():
    cfg = s5.S5Config()
    counts = {n: sum(p.numel() for p in s5.build_model(n, cfg).parameters()) for n in s5.MODELS}
    assert max(counts.values()) < 1.5 * min(counts.values())


@pytest.mark.parametrize("name", s5.MODELS)
def test_a_few_training_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    s = dataclasses.replace(
        s5.S5Settings.fast(), steps=40, batch=32, train_len=4, lr=3e-3, warmup=5, log_every=10
    )
    _, log = s5.train_model(name, s, progress=False)
    losses = [loss for _, loss, _ in log]
    assert len(losses) == 4
    assert losses[-1] < losses[0]


def test_cli_writes_results(tmp_path):
    out = tmp_path / "r.json"
    s5.main(["--fast", "--steps", "3", "--out", str(out), "--models", "transformer"])
    r = json.loads(out.read_text())
    assert r["device"] == "cpu"
    assert r["settings"]["steps"] == 3
    acc = r["models"]["transformer"]["accuracy"]
    assert set(acc) == {str(n) for n in r["settings"]["test_lens"]}
    assert all(0.0 <= v["all"] <= 1.0 for v in acc.values())
    assert "--fast" in r["command"]


def test_results_of_separate_runs_merge_into_one_file(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    s5.main(["--fast", "--steps", "3", "--out", str(a), "--models", "transformer"])
    s5.main(["--fast", "--steps", "3", "--out", str(b), "--models", "rwkv7"])
    out = tmp_path / "all.json"
    s5.main(["--merge", str(a), str(b), "--out", str(out)])
    merged = json.loads(out.read_text())
    assert set(merged["models"]) == {"transformer", "rwkv7"} and len(merged["commands"]) == 2
    with pytest.raises(ValueError, match="more than one"):
        s5.main(["--merge", str(a), str(a), "--out", str(out)])
    c = tmp_path / "c.json"
    s5.main(["--fast", "--steps", "4", "--out", str(c), "--models", "rwkv7"])
    with pytest.raises(ValueError, match="different settings"):
        s5.main(["--merge", str(a), str(c), "--out", str(out)])

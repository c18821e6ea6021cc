"""RWKV-7 layers: time mixing over image tokens, CrossWKV (text -> image), channel mixing.

Equations follow docs/design.md section 2 (the paper's eqs. 4-16, with its slips fixed).
All layers take ``x [B, T, D]`` and work per head in the ``[B, T, H, K]`` layout. The WKV
recurrence itself lives in the ``kernels`` folder and is reached only through ``dir7.ops``.

A time-mix layer is three steps, each a method a variant can override: ``project`` (token
shift, projections, LoRAs: x -> the recurrence's inputs), the recurrence ``wkv7``, and
``readout`` (GroupNorm, bonus, gate, output projection).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import shifted_sum, time_mix_prepare, time_mix_readout, wkv7

# the six token-shift lerps of TimeMix, in the order of its ``mu`` rows
MIX_ROWS = ("r", "w", "k", "v", "a", "g")

# w = -exp(-0.5) * sigmoid(z): the log-decay lies in (-0.6065, 0), the decay in (0.545, 1).
# Equal to RWKV-7's exp(-softplus(-z) - 0.5) form; fla's chunk_rwkv7 takes w itself.
LOG_DECAY_SCALE = -0.6065306597126334


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype element-wise work on ``x`` should run in: autocast's (bf16) where it is on.

    Numerical trap (speed): autocast runs LayerNorm in float32 and leaves element-wise ops to
    type promotion, so a float32 parameter (a lerp weight, a bias) silently turns every later
    element-wise op of a layer into a float32 pass. Layers cast such tensors to this dtype.
    """
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def token_shift(x: torch.Tensor) -> torch.Tensor:
    """x_{t-1} for every t (zeros at t = 0). ``x [B, T, D]``."""
    return F.pad(x, (0, 0, 1, -1))


# ---------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------


class LoRA(nn.Module):
    """``x -> act(x A) B + bias``: the low-rank data-dependent terms of RWKV-7.

    A is zero at init (the term starts as its bias), B orthogonal, so A still gets gradient.
    """

    def __init__(self, dim: int, rank: int, out_dim: int | None = None, act: str = "none", bias: bool = True):
        super().__init__()
        out_dim = dim if out_dim is None else out_dim
        self.A = nn.Parameter(torch.zeros(dim, rank))
        self.B = nn.Parameter(torch.zeros(rank, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.act = {"none": nn.Identity(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid()}[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(x @ self.A)

    def finish(self, h: torch.Tensor) -> torch.Tensor:
        """The second half, from ``h = x A`` (which a time-mix layer computes in one product with others)."""
        y = self.act(h) @ self.B
        # the bias in y's dtype: under autocast ``y + bias`` would promote the result to float32
        # (F.linear's fused bias does the same on a GPU but costs a copy of the output on a CPU)
        return y if self.bias is None else y + self.bias.to(y.dtype)


def _orthogonal_(p: torch.Tensor, gain: float) -> None:
    # RWKV-7's ortho_init: a tall matrix gets gain * sqrt(rows / cols).
    rows, cols = p.shape
    nn.init.orthogonal_(p, gain=gain * (math.sqrt(rows / cols) if rows > cols else 1.0))


def _xavier_(module: nn.Module, gain: float) -> None:
    """The paper's init: Xavier-uniform on every matrix, zero elsewhere (kept for the ablation).

    It leaves the token shift (mu), k_k, k_a and r_k at zero: no token shift and no
    delta-rule removal until training moves them. docs/design.md section 2 explains why the
    RWKV-7 recipe is the default.
    """
    for p in module.parameters(recurse=False):
        nn.init.zeros_(p)
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, LoRA):
            nn.init.xavier_uniform_(m.A, gain=gain)
            nn.init.xavier_uniform_(m.B, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _shift_ramp(dim: int, layer_id: int, n_layers: int) -> tuple[torch.Tensor, float, float]:
    """RWKV-7's per-channel ramp i / D and the two layer ratios used by its init."""
    ramp = torch.arange(dim, dtype=torch.float32) / dim
    ratio_0_to_1 = layer_id / max(n_layers - 1, 1)
    ratio_1_to_almost0 = 1.0 - layer_id / n_layers
    return ramp, ratio_0_to_1, ratio_1_to_almost0


# ---------------------------------------------------------------------------------------
# Time mixing (self) and CrossWKV
# ---------------------------------------------------------------------------------------


class TimeMix(nn.Module):
    """RWKV-7 time mixing: token shift, projections, value residual, WKV, GroupNorm, gate.

    ``forward(x, v_first)`` returns ``(out, v_first, state)``. The first layer of a stack
    (``layer_id == 0``) gets ``v_first=None`` and returns its own values as ``v_first``;
    later layers lerp towards it (the value residual, eq. 10).
    """

    def __init__(self, cfg, layer_id: int, n_layers: int):
        super().__init__()
        D, K = cfg.dim, cfg.head_size
        self.layer_id, self.n_layers = layer_id, n_layers
        self.n_heads, self.head_size = D // K, K
        self.init_scheme = cfg.init
        # token-shift lerp weights, one row per MIX_ROWS entry: r, w, k, v, a(eta), g
        self.mu = nn.Parameter(torch.zeros(6, D))
        self.receptance = nn.Linear(D, D, bias=False)
        self.key = nn.Linear(D, D, bias=False)
        self.value = nn.Linear(D, D, bias=False)
        self.output = nn.Linear(D, D, bias=False)
        self.w_lora = LoRA(D, cfg.decay_lora, act="tanh")
        self.a_lora = LoRA(D, cfg.iclr_lora)
        # the first layer defines v_first, so it has no value-residual LoRA (an unused
        # parameter would also break DDP's gradient bucketing)
        self.v_lora = LoRA(D, cfg.value_lora) if layer_id > 0 else None
        self.g_lora = LoRA(D, cfg.gate_lora, act="sigmoid", bias=False)
        self.k_k = nn.Parameter(torch.zeros(D))    # scales k before normalising it into kk
        self.k_a = nn.Parameter(torch.zeros(D))    # how much eta shrinks the written key
        self.r_k = nn.Parameter(torch.zeros(self.n_heads, K))  # per-head "bonus" r.k weight
        # RWKV-7's ln_x: per-head normalisation, eps scaled by the head size
        self.ln_x = nn.GroupNorm(self.n_heads, D, eps=K * 1e-5)
        self.reset_parameters()

    # ---- init ---------------------------------------------------------------------------

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.mu.is_meta:  # counting parameters without memory: nothing to initialise
            return
        if self.init_scheme == "xavier":
            _xavier_(self, gain=2**-2.5)
            return
        D, K = self.mu.shape[1], self.head_size
        ramp, r01, r10 = _shift_ramp(D, self.layer_id, self.n_layers)
        for i, power in enumerate((0.2, 0.9, 0.7, 0.7, 0.9, 0.2)):  # r, w, k, v, a, g
            self.mu[i] = 1.0 - ramp.pow(power * r10)
        n = torch.arange(D, dtype=torch.float32)
        linear = n / (D - 1) - 0.5
        zigzag = ((n % K) - (K - 1) / 2) / ((K - 1) / 2)
        zigzag = zigzag * zigzag.abs()
        # decay bias ramps across channels: slow decay on some channels, fast on others
        decay_bias = -6 + 6 * (n / (D - 1)) ** (1 + r01**0.3)
        self.w_lora.bias.copy_(decay_bias + 0.5 + zigzag * 2.5)
        self.a_lora.bias.copy_(-0.19 + zigzag * 0.3 + linear * 0.4)
        if self.v_lora is not None:
            self.v_lora.bias.copy_(0.73 - linear * 0.4)
        for lora in (self.w_lora, self.a_lora, self.v_lora, self.g_lora):
            if lora is not None:
                nn.init.zeros_(lora.A)
                _orthogonal_(lora.B, 0.1)
        self.k_k.copy_(0.71 - linear * 0.1)
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        bound = 0.5 / math.sqrt(D)
        if self.receptance is not None:
            nn.init.uniform_(self.receptance.weight, -bound, bound)
        nn.init.uniform_(self.key.weight, -0.1 * bound, 0.1 * bound)
        nn.init.uniform_(self.value.weight, -bound, bound)
        # RWKV-7 zeroes W_o. Inside DIR-7 every sub-layer is also multiplied by an adaLN-Zero
        # gate that starts at zero; with both at zero neither gets a gradient (a saddle), so
        # W_o gets the same small init as W_r instead.
        nn.init.uniform_(self.output.weight, -bound, bound)
        self.ln_x.reset_parameters()

    # ---- forward ------------------------------------------------------------------------

    # the first matrix each token-shifted lerp meets: (lerp row, [D, N] matrix) per product
    def _first_matrices(self) -> dict[str, tuple[int, torch.Tensor]]:
        row = MIX_ROWS.index
        m = {"k": (row("k"), self.key.weight.t()), "v": (row("v"), self.value.weight.t()),
             "w": (row("w"), self.w_lora.A), "a": (row("a"), self.a_lora.A), "g": (row("g"), self.g_lora.A)}
        if self.receptance is not None:
            m["r"] = (row("r"), self.receptance.weight.t())
        if self.v_lora is not None:
            m["v_mix"] = (row("v"), self.v_lora.A)
        return m

    def shifted_products(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """``x [B, T, D]`` -> ``{name: lerp_name(x) @ M_name}``, each ``[B, T, N_name]``, where
        ``lerp(x) = x + (x_{t-1} - x) * mu`` (the token shift) and ``M`` the first matrix the lerp
        meets: W_r, W_k, W_v, or the A of a LoRA ("w", "a", "v_mix", "g").

        Two ways to the same numbers (tests/model/test_layers.py holds them equal):
        - CUDA: no lerp is materialised. ``lerp(x) @ M = x @ ((1 - mu) M) + shift(x @ (mu M))``
          (the shift of a product is the product of the shift), so every product of the layer is
          one matrix product of x with the concatenated, mu-scaled matrices, ``[D, 2 * sum N]``,
          then one shifted add (``ops.shifted_sum``, one Triton pass each way): twice the FLOPs of
          the lerp path's products, but no ``[6, B, T, D]`` tensor written, read and
          differentiated through (memory, not FLOPs, bounds these layers on a GPU).
        - elsewhere (the CPU, where the products dominate): the six lerps, then the products.
        """
        x = x.to(compute_dtype(x))
        return (self._products_fused if x.is_cuda else self._products_lerped)(x, names)

    def _products_fused(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        mats = self._first_matrices()
        now, shifted = [], []
        for n in names:
            row, m = mats[n]
            mu = self.mu[row][:, None]                      # [D, 1]: mu scales M's rows (input channels)
            now.append(m - mu * m)
            shifted.append(mu * m)
        sizes = [m.shape[1] for m in now]
        y = x @ torch.cat(now + shifted, dim=1)             # [B, T, 2 * sum N]
        y = shifted_sum(y, sum(sizes))                       # [B, T, sum N]: y[:N] + token_shift(y[N:])
        return dict(zip(names, y.split(sizes, dim=-1)))     # column slices: the kernels take their strides

    def _products_lerped(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        mats = self._first_matrices()
        # the lerps that are needed, the square projections' first so that they are one slice
        B, T, D = x.shape
        square = [n for n in names if n in ("r", "k", "v")]
        rows = list(dict.fromkeys([mats[n][0] for n in square] + [mats[n][0] for n in names]))
        xs = torch.addcmul(x, token_shift(x) - x, self.mu.to(x.dtype)[rows, None, None, :])  # [n_rows, B, T, D]
        out = {}
        if square:  # the D x D projections as one batched product
            prods = torch.bmm(xs[:len(square)].view(len(square), B * T, D), torch.stack([mats[n][1] for n in square]))
            out.update(zip(square, prods.view(len(square), B, T, D)))
        for n in names:
            if n not in out:
                out[n] = xs[rows.index(mats[n][0])] @ mats[n][1]
        return out

    def project(
        self,
        x: torch.Tensor,
        v_first: torch.Tensor | None,
        receptance: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """``x [B, T, D]`` -> ``(r, w, k, v, a, b, g, v_first)``: the recurrence's inputs, each
        ``[B, T, H, K]``, the output gate ``g [B, T, D]`` and the value residual's ``v_first``.

        receptance: ``[B, T, D]`` to use instead of ``W_r x_r`` (CrossWKV paper mode).
        keep: ``[B, T]`` bool; positions where it is False become identity steps of the
        recurrence (no decay, no removal, no write): how text padding is kept out.
        """
        B, T, _ = x.shape
        H, K = self.n_heads, self.head_size
        names = ("k", "v", "w", "a") + (("r",) if receptance is None else ()) + \
            (("v_mix",) if v_first is not None else ()) + ("g",)
        p = self.shifted_products(x, names)                     # name -> [B, T, N]
        r = p["r"] if receptance is None else receptance
        k, v = p["k"], p["v"]
        v_mix = None if v_first is None else self.v_lora.finish(p["v_mix"])
        # the element-wise rest (kernels/time_mix.py: decay, value residual, removal key kk,
        # eta, text-padding mask), in one pass on a CPU; the kernel's dtype is r's (under
        # autocast r is bf16 while the LoRA terms are float32)
        w, k, v_mixed, a, b = time_mix_prepare(
            k, self.w_lora.finish(p["w"]), self.a_lora.finish(p["a"]), v, v_first, v_mix, self.k_k, self.k_a, keep,
            H, LOG_DECAY_SCALE, r.dtype)
        v_first = v if v_first is None else v_first
        g = self.g_lora.finish(p["g"])
        return r.view(B, T, H, K), w, k, v_mixed, a, b, g, v_first

    def readout(self, o: torch.Tensor, r: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                g: torch.Tensor) -> torch.Tensor:
        """The recurrence's output ``o [B, T, H, K]`` -> the layer's ``[B, T, D]``."""
        # ln_x is a GroupNorm with one group per head: a layer norm over each head's K values
        # and ln_x's affine; then the per-head bonus and the gate (kernels/time_mix.py)
        return self.output(time_mix_readout(o, r, k, v, g, self.ln_x.weight, self.ln_x.bias, self.r_k,
                                            self.ln_x.eps))

    def mix(
        self,
        x: torch.Tensor,
        v_first: torch.Tensor | None,
        receptance: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        initial_state: torch.Tensor | None = None,
        output_final_state: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The shared body of self and cross time mixing: project, recur, read out."""
        r, w, k, v, a, b, g, v_first = self.project(x, v_first, receptance, keep)
        o, state = wkv7(r, w, k, v, a, b, scale=1.0, initial_state=initial_state,
                        output_final_state=output_final_state)       # o: [B, T, H, K]
        return self.readout(o, r, k, v, g), v_first, state

    def forward(self, x, v_first=None, initial_state=None, output_final_state=False):
        return self.mix(x, v_first, initial_state=initial_state, output_final_state=output_final_state)


# The CrossWKV variants; "attention" (dir7.attention.CrossAttention) replaces CrossWKV in a block.
CROSSWKV_MODES = ("paper", "prefix", "state")
CROSS_MODES = (*CROSSWKV_MODES, "attention")


class CrossWKV(TimeMix):
    """Text -> image cross-attention built from the RWKV-7 state.

    ``mode="paper"`` (eqs. 4-16 literally): the text, zero-padded to the image length,
    supplies the receptance r; w, k, v, a, g and the token shift come from the image.
    Since the Linear has no bias, image positions t >= L get r = 0 and so read neither
    the text nor the state: only ``W_o(beta_GroupNorm * g_t)`` comes out there.

    ``mode="prefix"``: the projected text is scanned first and the image after it, in one
    sequence; every image position reads a state that holds the whole prompt. Padding is
    moved to the front and turned into identity steps, so outputs do not depend on it. The
    image tokens also write into the state and decay it as they pass: token t reads the prompt
    through what the t image tokens before it left of it.

    ``mode="state"`` (ours, aimed at object binding and counting, which need the whole prompt
    everywhere): the text alone is scanned into the state (same layer, same delta rule), and
    every image token reads that one state with its own receptance, ``o_t = S_L^T r_t``: no
    decay and no writes across image positions, so each token sees the whole, unfaded prompt,
    whatever the scan order. Padding as in prefix mode. The state depends on the text only.
    """

    @property
    def v_first_has_image(self) -> bool:
        """Whether the value residual's v_first holds image positions (which follow a scan order)."""
        return self.mode != "state"

    def __init__(self, cfg, layer_id: int, n_layers: int):
        self.mode = cfg.cross_mode
        if self.mode not in CROSSWKV_MODES:
            raise ValueError(f"CrossWKV's mode must be one of {CROSSWKV_MODES}, got {self.mode!r}")
        super().__init__(cfg, layer_id, n_layers)
        if self.mode == "paper":
            # eq. 7: r = Linear_{Dq -> D}(q_padded), no bias; W_r on the image is not used
            self.receptance = None
            self.text_receptance = nn.Linear(cfg.text_dim, cfg.dim, bias=False)
        else:
            self.text_in = nn.Linear(cfg.text_dim, cfg.dim, bias=False)
        self.reset_text_parameters()

    @torch.no_grad()
    def reset_text_parameters(self) -> None:
        lin = self.text_receptance if self.mode == "paper" else self.text_in
        if lin.weight.is_meta:
            return
        if self.init_scheme == "xavier":
            nn.init.xavier_uniform_(lin.weight, gain=2**-2.5)
            return
        bound = 0.5 / math.sqrt(lin.in_features)
        nn.init.uniform_(lin.weight, -bound, bound)
        if self.mode == "state":
            # RWKV-7's key init (a tenth of W_v's bound) suits a self-recurrence in which every
            # token writes. In state mode only the few text tokens write, so that state is tiny
            # and its read-out sits far below ln_x's eps: a fresh layer handed on 20x less prompt
            # than cross-attention, and after 0.7M emoji images its output was still 20x below
            # its prefix twin's (docs/experiments.md, "How strongly each text path starts").
            # Three times W_v's bound starts it about level with cross-attention.
            D = self.key.in_features
            key_bound = 3 * 0.5 / math.sqrt(D)
            nn.init.uniform_(self.key.weight, -key_bound, key_bound)

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        v_first: torch.Tensor | None = None,
        output_final_state: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x ``[B, T, D]`` image tokens, text ``[B, L, Dq]``, text_mask ``[B, L]`` (True = token)."""
        B, T, _ = x.shape
        L = text.shape[1]
        if self.mode == "paper":
            if L > T:
                raise ValueError(
                    f"CrossWKV paper mode pads the text to the image length, but the prompt has {L} tokens "
                    f"and the image {T}: use cross_mode='prefix', a shorter max_text_len or a larger image"
                )
            q = text * text_mask[..., None].to(text.dtype)
            q_padded = F.pad(q, (0, 0, 0, T - L))                       # [B, T, Dq]
            return self.mix(x, v_first, receptance=self.text_receptance(q_padded),
                            output_final_state=output_final_state)

        # prefix and state modes: move padding to the front (a stable sort keeps token order),
        # so the first image token's shift sees the last real text token
        order = torch.argsort(text_mask.to(torch.int8), dim=1, stable=True)  # [B, L]
        keep_text = torch.gather(text_mask, 1, order)
        text = torch.gather(text, 1, order[..., None].expand(-1, -1, text.shape[-1]))
        prefix = self.text_in(text) * keep_text[..., None].to(x.dtype)  # [B, L, D]
        if self.mode == "state":
            return self._read_text_state(x, prefix, keep_text, v_first)
        seq = torch.cat([prefix, x], dim=1)                              # [B, L + T, D]
        keep = torch.cat([keep_text, keep_text.new_ones(B, T)], dim=1)
        out, v_first, state = self.mix(seq, v_first, keep=keep, output_final_state=output_final_state)
        return out[:, L:], v_first, state                                 # image positions only

    def _read_text_state(self, x, prefix, keep_text, v_first):
        """State mode: scan the text into S_L, then every image token reads it: o_t = S_L^T r_t."""
        B, T, _ = x.shape
        H, K = self.n_heads, self.head_size
        _, w, k, v, a, b, _, v_first = self.project(prefix, v_first, keep=keep_text)
        r_text = torch.zeros_like(k)  # the text's own read-out is not used
        _, state = wkv7(r_text, w, k, v, a, b, scale=1.0, output_final_state=True)   # [B, H, K, K]
        # the image tokens' receptance and gate, with their own token shift
        p = self.shifted_products(x, ("r", "g"))
        r, g = p["r"].view(B, T, H, K), self.g_lora.finish(p["g"])
        o = torch.einsum("bthk,bhkv->bthv", r, state.to(r.dtype))
        # the per-head bonus reads a token's own write: image tokens write nothing here
        zero = torch.zeros_like(r)
        return self.readout(o, r, zero, zero, g), v_first, state


# ---------------------------------------------------------------------------------------
# Channel mixing
# ---------------------------------------------------------------------------------------


class ChannelMix(nn.Module):
    """RWKV-7 channel mixing: ``W_v(relu(W_k x_k)^2)`` with a token-shifted ``x_k``."""

    def __init__(self, cfg, layer_id: int, n_layers: int):
        super().__init__()
        D = cfg.dim
        hidden = int(cfg.mlp_ratio * D)
        self.layer_id, self.n_layers, self.init_scheme = layer_id, n_layers, cfg.init
        self.mu_k = nn.Parameter(torch.zeros(D))
        self.key = nn.Linear(D, hidden, bias=False)
        self.value = nn.Linear(hidden, D, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.mu_k.is_meta:
            return
        if self.init_scheme == "xavier":
            _xavier_(self, gain=2**-2.5)
            return
        D = self.mu_k.shape[0]
        ramp, _, r10 = _shift_ramp(D, self.layer_id, self.n_layers)
        self.mu_k.copy_(1.0 - ramp.pow(r10**4))
        bound = 0.5 / math.sqrt(D)
        nn.init.uniform_(self.key.weight, -bound, bound)
        # RWKV-7 zeroes W_v; see TimeMix.reset_parameters for why DIR-7 does not
        nn.init.uniform_(self.value.weight, -bound / 2, bound / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(compute_dtype(x))
        xk = torch.addcmul(x, token_shift(x) - x, self.mu_k.to(x.dtype))
        h = torch.relu(self.key(xk))
        return self.value(h * h)  # relu(.)^2; a product, not pow: a third of the time on a CPU

"""A straightforward PyTorch BlackMamba (DESIGN.md section 1) for benchmarking bmserve against.

bf16 weights (fp32 for norms, conv, dt bias, A, D and the router, as bmserve keeps them), fp32
residual stream and fp32 state. Decode: the selective state update, one token per sequence.
Prefill: a causal conv over [conv state | prompt] and a chunked scan (sequential within chunks of
32 positions, vectorised over the chunks, then one pass carrying the state across chunks).
MoE: top-1 routing as the reference's inference path. `moe="grouped"` (eager) sorts the tokens
by expert and runs one GEMM pair per touched expert (the per-expert token counts cross to the
host: one sync per MoE layer); `moe="static"` has no host sync or data-dependent shapes, so the
whole decode step can be captured in a CUDA graph: it gathers each token's expert weights when the
batch is smaller than the number of experts and otherwise runs every expert on every token and
masks (what a graph-capturable version of the reference structure allows).

The same module runs on the CPU in fp32 for the smoke test (tests/bench/peer_test.py).
"""
import json
import math
import os
import struct

import torch
import torch.nn.functional as F

PRESETS = {
    "blackmamba-1.5b": dict(num_layers=30, hidden_size=1152, ffn_hidden_size=3072),
    "blackmamba-2.8b": dict(num_layers=36, hidden_size=1472, ffn_hidden_size=3872),
    "tiny": dict(num_layers=4, hidden_size=64, ffn_hidden_size=96),  # smoke runs only
}


def preset_config(name):
    p = PRESETS[name]
    return {
        "num_layers": p["num_layers"],
        "hidden_size": p["hidden_size"],
        "state_size": 16,
        "conv_dimension": 4,
        "vocab_size": 50304,
        "expansion_factor": 2,
        "mamba_moe_layers": ["r", "8"] * (p["num_layers"] // 2),
        "ffn_hidden_size": p["ffn_hidden_size"],
        "add_bias_linear": False,
        "swiglu": True,
        "layernorm_epsilon": 1e-5,
    }


def expected_shapes(cfg):
    """{checkpoint key: shape} for a config (DESIGN.md section 1)."""
    d, n, w, V = cfg["hidden_size"], cfg.get("state_size", 16), cfg.get("conv_dimension", 4), cfg["vocab_size"]
    di = cfg.get("expansion_factor", 2) * d
    r = math.ceil(d / 16)
    f = cfg["ffn_hidden_size"]
    rows1 = 2 * f if cfg.get("swiglu", True) else f
    out = {"embedding.word_embeddings.weight": [V, d], "decoder.final_layernorm.weight": [d],
           "decoder.final_layernorm.bias": [d]}
    for i, code in enumerate(cfg["mamba_moe_layers"]):
        p = f"decoder.layers.{i}."
        out[p + "norm.weight"] = [d]
        m = p + "mixer."
        if code == "r":
            out.update({m + "in_proj.weight": [2 * di, d], m + "conv1d.weight": [di, 1, w],
                        m + "conv1d.bias": [di], m + "x_proj.weight": [r + 2 * n, di],
                        m + "dt_proj.weight": [di, r], m + "dt_proj.bias": [di],
                        m + "A_log": [di, n], m + "D": [di], m + "out_proj.weight": [d, di]})
        elif code == "1":
            out.update({m + "linear_fc1.weight": [rows1, d], m + "linear_fc2.weight": [d, f]})
        else:
            E = int(code)
            out.update({m + "router.weight": [E, d], m + "router.bias": [E]})
            for e in range(E):
                q = f"{m}local_experts.{e}."
                out.update({q + "linear_fc1.weight": [rows1, d], q + "linear_fc2.weight": [d, f]})
    return out


def random_weights(cfg, seed=1234, device="cpu"):
    """Random weights with the distributions of engine/random_weights.cc (not the same values)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    d, w = cfg["hidden_size"], cfg.get("conv_dimension", 4)
    out = {}
    for name, shape in expected_shapes(cfg).items():
        if name == "embedding.word_embeddings.weight":
            t = torch.randn(shape, generator=g, device=device) / math.sqrt(d)
        elif name.endswith("norm.weight") or name.endswith(".D"):
            t = torch.ones(shape, device=device)
        elif name == "decoder.final_layernorm.bias":
            t = torch.zeros(shape, device=device)
        elif name.endswith(".A_log"):
            n = shape[-1]
            t = torch.log(torch.arange(1, n + 1, device=device, dtype=torch.float32)).repeat(shape[0], 1)
        elif name.endswith("conv1d.weight") or name.endswith("conv1d.bias"):
            t = (torch.rand(shape, generator=g, device=device) * 2 - 1) / math.sqrt(w)
        elif name.endswith("dt_proj.bias"):
            lo, hi = math.log(1e-3), math.log(1e-1)
            dt = torch.exp(lo + (hi - lo) * torch.rand(shape, generator=g, device=device)).clamp(min=1e-4)
            t = dt + torch.log(-torch.expm1(-dt))
        elif name.endswith(".bias"):
            t = torch.randn(shape, generator=g, device=device) * 0.02
        else:
            gain = 4.0 if name.endswith("out_proj.weight") or name.endswith("linear_fc2.weight") else 1.0
            t = torch.randn(shape, generator=g, device=device) * (gain / math.sqrt(shape[-1]))
        out[name] = t.float()
    return out


def load_safetensors(model_dir):
    """(config dict, {name: tensor}) from DIR/config.json + DIR/model.safetensors (F32/BF16/F16)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        data = bytearray(f.read())
    (hlen,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8:8 + hlen]).decode())
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = dtypes[info["dtype"]]
        size = torch.tensor([], dtype=dt).element_size()
        t = torch.frombuffer(data, dtype=dt, count=(e - b) // size, offset=8 + hlen + b)
        out[name] = t.reshape(info["shape"])
    return cfg, out


class Peer:
    """BlackMamba forward pass. dtype: the GEMM dtype (torch.bfloat16 on the GPU, float32 on CPU)."""

    def __init__(self, cfg, weights, device, dtype=torch.bfloat16, moe="grouped"):
        self.cfg, self.device, self.dtype, self.moe = cfg, device, dtype, moe
        self.d = cfg["hidden_size"]
        self.n = cfg.get("state_size", 16)
        self.w = cfg.get("conv_dimension", 4)
        self.di = cfg.get("expansion_factor", 2) * self.d
        self.r = math.ceil(self.d / 16)
        self.f = cfg["ffn_hidden_size"]
        self.eps = cfg.get("layernorm_epsilon", 1e-5)
        self.gated = cfg.get("swiglu", True)
        self.act = F.silu if cfg.get("mlp_activation", "gelu") == "silu" else F.gelu
        self.codes = cfg["mamba_moe_layers"]
        W = lambda k: weights[k].to(device=device, dtype=dtype).contiguous()  # noqa: E731
        Fp = lambda k: weights[k].to(device=device, dtype=torch.float32).contiguous()  # noqa: E731
        self.emb = W("embedding.word_embeddings.weight")
        self.final_w = Fp("decoder.final_layernorm.weight")
        self.final_b = Fp("decoder.final_layernorm.bias")
        self.layers = []
        for i, code in enumerate(self.codes):
            p = f"decoder.layers.{i}."
            m = p + "mixer."
            L = {"code": code, "norm": Fp(p + "norm.weight")}
            if code == "r":
                L.update(in_proj=W(m + "in_proj.weight"), conv_w=Fp(m + "conv1d.weight")[:, 0, :],
                         conv_b=Fp(m + "conv1d.bias"), x_proj=W(m + "x_proj.weight"),
                         dt_proj=W(m + "dt_proj.weight"), dt_b=Fp(m + "dt_proj.bias"),
                         A=-torch.exp(Fp(m + "A_log")), D=Fp(m + "D"), out_proj=W(m + "out_proj.weight"))
            elif code == "1":
                L.update(fc1=W(m + "linear_fc1.weight")[None], fc2=W(m + "linear_fc2.weight")[None])
            else:
                E = int(code)
                L.update(router=Fp(m + "router.weight"), router_b=Fp(m + "router.bias"),
                         fc1=torch.stack([W(f"{m}local_experts.{e}.linear_fc1.weight") for e in range(E)]),
                         fc2=torch.stack([W(f"{m}local_experts.{e}.linear_fc2.weight") for e in range(E)]))
            self.layers.append(L)

    # -------------------------------------------------------------------------------- state
    def new_state(self, batch):
        """Per Mamba layer: conv window [B, di, w-1] and ssm [B, di, n], fp32 zeros."""
        return [(torch.zeros(batch, self.di, self.w - 1, device=self.device),
                 torch.zeros(batch, self.di, self.n, device=self.device))
                for L in self.layers if L["code"] == "r"]

    # -------------------------------------------------------------------------------- blocks
    def _gate(self, a):
        if self.gated:
            return self.act(a[..., :self.f]) * a[..., self.f:]
        return self.act(a)

    def _mlp_dense(self, x, fc1, fc2):  # x [T, d]
        return self._gate(x @ fc1.t()) @ fc2.t()

    def _moe(self, L, x, x32):  # x [T, d] (GEMM dtype), x32 fp32 -> [T, d] fp32
        if L["code"] == "1":
            return self._mlp_dense(x, L["fc1"][0], L["fc2"][0]).float()
        p = torch.sigmoid(x32 @ L["router"].t() + L["router_b"])  # [T, E]
        scale, e = p.max(dim=-1)  # first index on ties
        E, T = L["fc1"].shape[0], x.shape[0]
        if self.moe == "grouped":
            order = torch.argsort(e)
            counts = torch.bincount(e, minlength=E).tolist()  # host sync
            xs = x[order]
            ys = torch.empty_like(xs)
            start = 0
            for k, c in enumerate(counts):
                if c:
                    ys[start:start + c] = self._mlp_dense(xs[start:start + c], L["fc1"][k], L["fc2"][k])
                    start += c
            out = torch.empty_like(ys)
            out[order] = ys
            return out.float() * scale[:, None]
        if T < E:  # gather each token's expert weights: reads only the touched experts
            a = torch.bmm(L["fc1"][e], x[:, :, None])[:, :, 0]
            y = torch.bmm(L["fc2"][e], self._gate(a)[:, :, None])[:, :, 0]
            return y.float() * scale[:, None]
        out = torch.zeros(T, self.d, device=x.device, dtype=torch.float32)
        for k in range(E):  # every expert on every token, masked
            mask = (e == k).to(torch.float32) * scale
            out += self._mlp_dense(x, L["fc1"][k], L["fc2"][k]).float() * mask[:, None]
        return out

    def _mamba_step(self, L, x, st):  # decode: x [B, d]; st = (conv [B,di,w-1], ssm [B,di,n])
        conv, ssm = st
        xz = x @ L["in_proj"].t()
        xi, z = xz[:, :self.di].float(), xz[:, self.di:]
        window = torch.cat([conv, xi[:, :, None]], dim=2)  # [B, di, w]
        conv.copy_(window[:, :, 1:])
        xc = F.silu((window * L["conv_w"]).sum(-1) + L["conv_b"])  # [B, di]
        dbc = xc.to(self.dtype) @ L["x_proj"].t()
        dt_low, Bm, Cm = dbc[:, :self.r], dbc[:, self.r:self.r + self.n], dbc[:, self.r + self.n:]
        dt = F.softplus((dt_low @ L["dt_proj"].t()).float() + L["dt_b"])  # [B, di]
        ssm.mul_(torch.exp(dt[:, :, None] * L["A"])).add_((dt * xc)[:, :, None] * Bm.float()[:, None, :])
        y = torch.einsum("bdn,bn->bd", ssm, Cm.float()) + L["D"] * xc
        return (y * F.silu(z.float())).to(self.dtype) @ L["out_proj"].t()

    def _mamba_prefill(self, L, x, st, chunk=32):  # one sequence: x [T, d]; st for batch 1
        conv, ssm = st
        T = x.shape[0]
        xz = x @ L["in_proj"].t()
        xi, z = xz[:, :self.di].float(), xz[:, self.di:]
        seq = torch.cat([conv[0], xi.t()], dim=1)  # [di, w-1+T]
        conv[0].copy_(seq[:, -(self.w - 1):])
        xc = F.silu(F.conv1d(seq[None], L["conv_w"][:, None, :], L["conv_b"], groups=self.di)[0].t())  # [T, di]
        dbc = xc.to(self.dtype) @ L["x_proj"].t()
        dt_low, Bm, Cm = dbc[:, :self.r], dbc[:, self.r:self.r + self.n].float(), dbc[:, self.r + self.n:].float()
        dt = F.softplus((dt_low @ L["dt_proj"].t()).float() + L["dt_b"])  # [T, di]
        # h_t = a_t * h_{t-1} + b_t with a = exp(dt A), b = dt x B: [T, di, n].
        nc = (T + chunk - 1) // chunk
        pad = nc * chunk - T
        a = torch.exp(dt[:, :, None] * L["A"])
        b = (dt * xc)[:, :, None] * Bm[:, None, :]
        if pad:
            a = torch.cat([a, torch.ones(pad, self.di, self.n, device=a.device)])
            b = torch.cat([b, torch.zeros(pad, self.di, self.n, device=b.device)])
        a = a.view(nc, chunk, self.di, self.n)
        b = b.view(nc, chunk, self.di, self.n)
        for j in range(1, chunk):  # within chunks, all chunks at once
            b[:, j].addcmul_(a[:, j], b[:, j - 1])
            a[:, j].mul_(a[:, j - 1])
        carry = torch.empty(nc, self.di, self.n, device=a.device)
        h = ssm[0]
        for c in range(nc):  # across chunks
            carry[c] = h
            h = a[c, -1] * h + b[c, -1]
        ssm[0].copy_(h)
        hs = (a * carry[:, None] + b).view(nc * chunk, self.di, self.n)[:T]
        y = torch.einsum("tdn,tn->td", hs, Cm) + L["D"] * xc
        return (y * F.silu(z.float())).to(self.dtype) @ L["out_proj"].t()

    # -------------------------------------------------------------------------------- model
    def _forward(self, tokens, state, prefill, last_only=False):
        h = self.emb[tokens]
        residual = None
        mi = 0
        for L in self.layers:
            residual = h.float() if residual is None else residual + h.float()
            x32 = residual * torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + self.eps) * L["norm"]
            x = x32.to(self.dtype)
            if L["code"] == "r":
                st = state[mi]
                mi += 1
                h = self._mamba_prefill(L, x, st) if prefill else self._mamba_step(L, x, st)
            else:
                h = self._moe(L, x, x32)
        residual = residual + h.float()
        if last_only:
            residual = residual[-1:]
        y = F.layer_norm(residual, (self.d,), self.final_w, self.final_b, self.eps)
        return y.to(self.dtype) @ self.emb.t()

    @torch.no_grad()
    def decode(self, tokens, state):
        """tokens [B] (one per sequence) -> logits [B, V]; state updated in place."""
        return self._forward(tokens, state, prefill=False)

    @torch.no_grad()
    def prefill(self, tokens, state, logits="last"):
        """One sequence, tokens [T], continuing `state` (batch 1) -> logits [1, V] or [T, V]."""
        return self._forward(tokens, state, prefill=True, last_only=logits == "last")

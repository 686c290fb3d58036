#!/usr/bin/python3
"""Independent PyTorch reference of the BlackMamba forward pass (DESIGN.md section 1).

Written from the DESIGN text, not from the C++ code. Loads a model directory (config.json plus
model.safetensors, sharded safetensors with model.safetensors.index.json, or pytorch_model.bin),
converts every weight to fp32, and computes the logits after every prompt position and a greedy
continuation. Used by reference_test.py; also runnable by hand:

  /usr/bin/python3 reference_blackmamba.py --model DIR --prompt-ids 1,2,3 --max-tokens 8
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------------
# Checkpoint loading


def _read_safetensors(path):
    """A minimal safetensors parser: u64 header size, JSON header, raw little-endian data."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[base + begin : base + end]
        shape = info["shape"]
        dtype = info["dtype"]
        if dtype == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dtype == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        tensors[name] = torch.from_numpy(arr.reshape(shape).copy())
    return tensors


def load_checkpoint(model_dir):
    """Returns (config dict, {name: fp32 tensor})."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    torch_bin = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.exists(single):
        tensors = _read_safetensors(single)
    elif os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(_read_safetensors(os.path.join(model_dir, shard)))
    elif os.path.exists(torch_bin):
        obj = torch.load(torch_bin, map_location="cpu")
        state = obj["model"] if isinstance(obj, dict) and "model" in obj else obj
        tensors = {k: v.float().contiguous() for k, v in state.items()}
    else:
        raise FileNotFoundError(f"{model_dir}: no model.safetensors, index or pytorch_model.bin")
    return config, {k: v.float() for k, v in tensors.items()}


# ------------------------------------------------------------------------------------------------
# The model


class BlackMamba:
    def __init__(self, config, w):
        self.w = w
        self.d = config["hidden_size"]
        self.n_layers = config["num_layers"]
        self.n = config.get("state_size", 16)
        self.conv_w = config.get("conv_dimension", 4)
        self.d_inner = config.get("expansion_factor", 2) * self.d
        self.dt_rank = math.ceil(self.d / 16)
        self.eps = config.get("layernorm_epsilon", 1e-5)
        self.gated = config.get("swiglu", True)
        self.bias = config.get("add_bias_linear", False)
        act = config.get("mlp_activation", "gelu")
        self.act = (lambda x: F.gelu(x)) if act == "gelu" else F.silu  # F.gelu is the erf form
        self.ffn = config["ffn_hidden_size"]
        self.layers = config["mamba_moe_layers"]
        assert len(self.layers) == self.n_layers

    def _lin(self, x, prefix):
        y = x @ self.w[prefix + ".weight"].t()
        if (prefix + ".bias") in self.w:
            y = y + self.w[prefix + ".bias"]
        return y

    def _mlp(self, x, prefix):  # x [T, d]
        a = self._lin(x, prefix + "linear_fc1")
        if self.gated:
            a0, a1 = a[:, : self.ffn], a[:, self.ffn :]
            g = self.act(a0) * a1
        else:
            g = self.act(a)
        return self._lin(g, prefix + "linear_fc2")

    def _moe(self, x, prefix):  # x [T, d]
        p = torch.sigmoid(self._lin(x, prefix + "router"))  # [T, E]
        out = torch.zeros_like(x)
        for t in range(x.shape[0]):
            e = int(torch.argmax(p[t]))  # first index on ties
            y = self._mlp(x[t : t + 1], f"{prefix}local_experts.{e}.")
            out[t] = p[t, e] * y[0]
        return out

    def _mamba(self, h, prefix):  # h [T, d] -> [T, d]
        T = h.shape[0]
        di, n, r, w = self.d_inner, self.n, self.dt_rank, self.conv_w
        xz = self._lin(h, prefix + "in_proj")
        x, z = xz[:, :di], xz[:, di:]
        # Causal depthwise conv: zeros before the start, window = the last w inputs.
        weight = self.w[prefix + "conv1d.weight"]  # [di, 1, w]
        xc = F.conv1d(x.t().unsqueeze(0), weight, self.w[prefix + "conv1d.bias"], padding=w - 1,
                      groups=di)[0, :, :T].t()
        xc = F.silu(xc)  # [T, di]
        dbc = xc @ self.w[prefix + "x_proj.weight"].t()
        dt_low, B, C = dbc[:, :r], dbc[:, r : r + n], dbc[:, r + n :]
        dt = F.softplus(dt_low @ self.w[prefix + "dt_proj.weight"].t() + self.w[prefix + "dt_proj.bias"])
        A = -torch.exp(self.w[prefix + "A_log"])  # [di, n]
        D = self.w[prefix + "D"]
        ssm = torch.zeros(di, n)
        ys = []
        for t in range(T):
            ssm = ssm * torch.exp(dt[t][:, None] * A) + (dt[t] * xc[t])[:, None] * B[t][None, :]
            ys.append(ssm @ C[t] + D * xc[t])
        y = torch.stack(ys)  # [T, di]
        return self._lin(y * F.silu(z), prefix + "out_proj")

    @torch.no_grad()
    def logits(self, tokens):
        """fp32 logits after every position: [T, vocab]."""
        E = self.w["embedding.word_embeddings.weight"]
        h = E[torch.tensor(tokens, dtype=torch.long)]
        residual = None
        for i, code in enumerate(self.layers):
            residual = h if residual is None else residual + h
            x = residual * torch.rsqrt(residual.pow(2).mean(-1, keepdim=True) + self.eps)
            x = x * self.w[f"decoder.layers.{i}.norm.weight"]
            prefix = f"decoder.layers.{i}.mixer."
            if code == "r":
                h = self._mamba(x, prefix)
            elif code == "1":
                h = self._mlp(x, prefix)
            else:
                h = self._moe(x, prefix)
        residual = residual + h
        y = F.layer_norm(residual, (self.d,), self.w["decoder.final_layernorm.weight"],
                         self.w["decoder.final_layernorm.bias"], self.eps)
        return y @ E.t()

    def greedy(self, prompt, max_tokens):
        tokens = list(prompt)
        out = []
        for _ in range(max_tokens):
            nxt = int(torch.argmax(self.logits(tokens)[-1]))
            out.append(nxt)
            tokens.append(nxt)
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--out", help="write JSON {logits, greedy} here (default: print greedy ids)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    config, w = load_checkpoint(a.model)
    model = BlackMamba(config, w)
    prompt = [int(t) for t in a.prompt_ids.split(",")]
    greedy = model.greedy(prompt, a.max_tokens)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"logits": model.logits(prompt).tolist(), "greedy": greedy}, f)
    else:
        print(",".join(str(t) for t in greedy))
    return 0


if __name__ == "__main__":
    sys.exit(main())

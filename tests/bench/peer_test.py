#!/usr/bin/python3
"""Smoke test of the PyTorch peer (bench/torch_peer/blackmamba_peer.py) on the CPU: on a tiny
random model its logits (chunked prefill with a carried state, then batched decode, both MoE
variants) match the independent reference tests/model/reference_blackmamba.py, and its
safetensors loader returns what a minimal writer here stored. Exit 77 (skip) without torch."""
import json
import os
import struct
import sys
import tempfile

try:
    import torch
except ImportError:
    print("SKIP: /usr/bin/python3 has no torch")
    sys.exit(77)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench", "torch_peer"))
sys.path.insert(0, os.path.join(ROOT, "tests", "model"))
import blackmamba_peer as bp  # noqa: E402
import reference_blackmamba as ref  # noqa: E402

CFG = {"num_layers": 4, "hidden_size": 64, "state_size": 16, "conv_dimension": 4,
       "vocab_size": 300, "expansion_factor": 2, "mamba_moe_layers": ["r", "8", "r", "1"],
       "ffn_hidden_size": 96, "add_bias_linear": False, "swiglu": True}
failures = []


def close(name, got, want, tol=2e-4):
    err = (got - want).abs().max().item()
    scale = max(1.0, want.abs().max().item())
    ok = err <= tol * scale
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs err {err:.2e} (scale {scale:.2f})")
    if not ok:
        failures.append(name)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    w = bp.random_weights(CFG, seed=5)
    # Sanity of the random weights: every key of the layout with its shape.
    for k, shape in bp.expected_shapes(CFG).items():
        assert list(w[k].shape) == shape, k
    oracle = ref.BlackMamba(CFG, w)
    cache = {}

    def last_logits(seq):  # the reference's logits after the last token (memoised)
        key = tuple(seq)
        if key not in cache:
            cache[key] = oracle.logits(seq)[-1]
        return cache[key]
    prompts = [[(7 * i + 3 * s) % 300 for i in range(n)] for s, n in enumerate([45, 9, 20])]
    for moe in ("grouped", "static"):
        peer = bp.Peer(CFG, w, "cpu", dtype=torch.float32, moe=moe)
        # Chunked prefill (two chunks, the first longer than the 32-position scan chunk).
        p = prompts[0]
        st = peer.new_state(1)
        a = peer.prefill(torch.tensor(p[:37]), st, logits="all")
        b = peer.prefill(torch.tensor(p[37:]), st, logits="all")
        close(f"{moe}: prefill 37+8 all rows", torch.cat([a, b]), oracle.logits(p))
        # Batched decode: each prompt prefilled alone, states stacked, 4 greedy steps.
        for batch in (3, 9):
            seqs = [list(prompts[i % 3]) for i in range(batch)]
            states = []
            nxt = []
            for s in seqs:
                st1 = peer.new_state(1)
                nxt.append(int(peer.prefill(torch.tensor(s), st1)[0].argmax()))
                states.append(st1)
            state = [(torch.cat([x[i][0] for x in states]), torch.cat([x[i][1] for x in states]))
                     for i in range(len(states[0]))]
            for step in range(4):
                for s, t in zip(seqs, nxt):
                    s.append(t)
                got = peer.decode(torch.tensor(nxt), state)
                want = torch.stack([last_logits(s) for s in seqs])
                close(f"{moe}: decode batch {batch} step {step}", got, want)
                nxt = [int(r.argmax()) for r in got]
    # Safetensors loader: F32 and BF16 tensors written by a minimal writer.
    with tempfile.TemporaryDirectory() as d:
        t32 = torch.randn(3, 5)
        t16 = torch.randn(4, 2).to(torch.bfloat16)
        blobs = [t32.numpy().tobytes(), t16.view(torch.int16).numpy().tobytes()]
        header = {"a": {"dtype": "F32", "shape": [3, 5], "data_offsets": [0, len(blobs[0])]},
                  "b": {"dtype": "BF16", "shape": [4, 2],
                        "data_offsets": [len(blobs[0]), len(blobs[0]) + len(blobs[1])]}}
        h = json.dumps(header).encode()
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + blobs[0] + blobs[1])
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(CFG, f)
        cfg, got = bp.load_safetensors(d)
        ok = cfg == CFG and torch.equal(got["a"], t32) and torch.equal(got["b"], t16)
        print(f"{'ok  ' if ok else 'FAIL'} safetensors loader")
        if not ok:
            failures.append("safetensors loader")
    print("FAILED: " + ", ".join(failures) if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

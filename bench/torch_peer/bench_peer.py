"""PyTorch peer benchmark: the same rows as bms_bench (decode ms/step per batch, prefill and TTFT)
for the straightforward PyTorch BlackMamba in blackmamba_peer.py, eager ("torch-eager": grouped
MoE with one host sync per MoE layer) and with the decode step captured in a CUDA graph
("torch-graph": static-shape MoE). Greedy argmax on the GPU after every decode step (what a
server step needs); fp32 state; bf16 weights, either the exact weights bms_bench wrote with
--save_weights (--model_root DIR/<preset>) or random ones with the same distribution.

  python3 bench_peer.py --presets=blackmamba-2.8b --batches=1,8,64 --json=OUT.json
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blackmamba_peer as bp  # noqa: E402


def ints(s):
    return [int(x) for x in s.split(",") if x]


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps, warm=1):
    ms = []
    for i in range(warm + reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        if i >= warm:
            ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    return ms[len(ms) // 2]


def bench_preset(a, preset, log):
    dev = a.device
    t0 = time.time()
    model_dir = os.path.join(a.model_root, preset) if a.model_root else ""
    if model_dir and os.path.exists(os.path.join(model_dir, "model.safetensors")):
        cfg, w = bp.load_safetensors(model_dir)
        source = f"exact bms_bench weights from {model_dir}"
    else:
        cfg = bp.preset_config(preset)
        w = bp.random_weights(cfg, seed=1234, device=dev)
        # The big matrices as bf16 right away (the fp32 copies would double the GPU memory).
        w = {k: v.to(torch.bfloat16) if v.dim() == 2 and v.numel() > 1 << 20 else v
             for k, v in w.items()}
        source = "random weights, same distribution (not the same values)"
    rows = []
    V = cfg["vocab_size"]
    g = torch.Generator(device=dev)
    g.manual_seed(7)
    for variant in a.variants:
        moe = "grouped" if variant == "eager" else "static"
        peer = bp.Peer(cfg, w, dev, dtype=torch.bfloat16 if dev == "cuda" else torch.float32,
                       moe=moe)
        log(f"{preset} torch-{variant}: model ready in {time.time() - t0:.1f} s ({source})")
        if variant == "eager":
            for kind, lens in (("prefill", a.prompts), ("ttft", a.ttft_prompts)):
                for n in lens:
                    toks = torch.randint(0, V, (n,), device=dev, generator=g)

                    def run(toks=toks, n=n, kind=kind):
                        st = peer.new_state(1)
                        for s in range(0, n, a.chunk):
                            out = peer.prefill(toks[s:s + a.chunk], st)
                        if kind == "ttft":
                            int(out[0].argmax())  # the first token reaches the host

                    ms = timed(run, 3)
                    rows.append(dict(preset=preset, kind=kind, mode="torch-eager", state="f32",
                                     size=n, ms=ms, tokens_per_s=n / ms * 1e3))
                    log(f"{preset} torch-eager {kind} {n}: {ms:.2f} ms")
        for batch in a.batches:
            try:
                state = peer.new_state(batch)
                toks = torch.randint(0, V, (batch,), device=dev, generator=g)
                nxt = torch.empty(batch, dtype=torch.long, device=dev)

                def step():
                    nxt.copy_(peer.decode(toks, state).argmax(-1))

                steps = a.steps if batch < 512 else max(5, a.steps // 2)
                if variant == "graph":
                    s = torch.cuda.Stream()
                    s.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(s):
                        for _ in range(2):
                            step()
                    torch.cuda.current_stream().wait_stream(s)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        step()
                    ms = timed(graph.replay, steps, warm=2)
                    del graph
                else:
                    ms = timed(step, steps, warm=2)
                rows.append(dict(preset=preset, kind="decode", mode=f"torch-{variant}", state="f32",
                                 size=batch, ms=ms, tokens_per_s=batch / ms * 1e3))
                log(f"{preset} torch-{variant} decode batch {batch}: {ms:.3f} ms/step")
            except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                log(f"{preset} torch-{variant} decode batch {batch}: FAILED {str(e)[:200]}")
            finally:
                state = None
                if dev == "cuda":
                    torch.cuda.empty_cache()
        del peer
        if dev == "cuda":
            torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--presets", default="blackmamba-2.8b,blackmamba-1.5b")
    ap.add_argument("--batches", type=ints, default=ints("1,8,32,64,128,256,1024"))
    ap.add_argument("--prompts", type=ints, default=ints("512,2048,8192"))
    ap.add_argument("--ttft_prompts", type=ints, default=ints("128,2048"))
    ap.add_argument("--chunk", type=int, default=2048, help="prefill chunk (bmserve's token budget)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variants", default="eager,graph")
    ap.add_argument("--model_root", default="", help="DIR of bms_bench --save_weights=DIR")
    ap.add_argument("--json", default="")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke run (eager only)")
    a = ap.parse_args()
    a.variants = [v for v in a.variants.split(",") if v]
    if a.device == "cuda" and not torch.cuda.is_available():
        print("bench_peer: no CUDA device", file=sys.stderr)
        return 2
    if a.device != "cuda" and "graph" in a.variants:
        print("bench_peer: --variants=graph needs --device=cuda", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu"

    def log(msg):
        print(msg, flush=True)

    log(f"torch {torch.__version__}, {name}")
    rows = []
    for preset in [p for p in a.presets.split(",") if p]:
        rows += bench_preset(a, preset, log)
    print(f"\n{'preset':<16} {'kind':<8} {'mode':<12} {'size':>6} {'ms':>10} {'tok/s':>12}")
    for r in rows:
        print(f"{r['preset']:<16} {r['kind']:<8} {r['mode']:<12} {r['size']:>6} {r['ms']:>10.3f} "
              f"{r['tokens_per_s']:>12.0f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": name,
                       "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

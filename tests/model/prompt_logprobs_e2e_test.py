#!/usr/bin/python3
"""Prompt scoring over HTTP vs the independent PyTorch reference (reference_blackmamba.py).

Serves a tiny random checkpoint (`bmserve make-model`, byte tokenizer: one token per prompt
byte) and checks /v1/completions with echo + logprobs and vLLM's prompt_logprobs:
  - logprobs.tokens / token_logprobs / top_logprobs / text_offset start with the prompt's tokens
    (the first with null), each prompt token's logprob equal to the reference's log-softmax at
    the previous position, its alternatives the reference's most likely tokens;
  - choices[].prompt_logprobs: [null, {id: {logprob, rank, decoded_token}}] with the
    reference's logprob and rank;
  - the same values streamed (the echoed prompt goes out with its scores) and with the prompt
    prefilled in several chunks (--max-num-batched-tokens below the prompt length);
  - chat completions get prompt_logprobs too; out-of-range values are a 400 naming the field.

usage: prompt_logprobs_e2e_test.py BMSERVE WORKDIR
Exits 77 (ctest SKIP_RETURN_CODE) when torch or numpy is missing.
"""
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

SKIP = 77
try:
    import torch
except ImportError as e:  # pragma: no cover
    print(f"SKIP: the PyTorch reference needs torch for /usr/bin/python3 ({e})")
    sys.exit(SKIP)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import reference_blackmamba as ref  # noqa: E402
from demo_server import DemoServer  # noqa: E402

PROMPT = "Mamba state, MoE experts!"
TOP = 2
TOL = 2e-3  # logprob units; the CPU backend matches the reference's logits to ~1e-6 relative
failures = []


def display(t):
    """OpenAI's token string under the byte tokenizer: ASCII as is, other bytes as "bytes:\\xNN",
    ids past the 256 byte tokens as "" (they have no bytes)."""
    return chr(t) if t < 128 else f"bytes:\\x{t:02x}" if t < 256 else ""


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def post(port, path, body, stream=False):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            if not stream:
                return r.status, json.loads(r.read())
            chunks = []
            for line in r:
                line = line.decode().strip()
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(json.loads(line[6:]))
            return r.status, chunks
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def reference_scores(model, ids):
    """Per prompt position i >= 1: (logprob of ids[i], rank, top-TOP ids) from row i - 1."""
    logp = torch.log_softmax(model.logits(ids).double(), dim=-1)
    out = []
    for i in range(1, len(ids)):
        row = logp[i - 1]
        lp = float(row[ids[i]])
        rank = 1 + int((row > row[ids[i]]).sum())
        top = [int(t) for t in torch.argsort(row, descending=True, stable=True)[:TOP]]
        out.append((lp, rank, top, [float(row[t]) for t in top]))
    return out


def check_completion(tag, choice, ids, want, n_generated):
    L = len(ids)
    lp = choice["logprobs"]
    check(choice["text"].startswith(PROMPT), f"{tag}: text does not start with the prompt")
    check(len(lp["tokens"]) == L + n_generated,
          f"{tag}: {len(lp['tokens'])} logprob tokens, want {L} prompt + {n_generated}")
    check(lp["tokens"][:L] == [chr(b) for b in ids], f"{tag}: prompt tokens {lp['tokens'][:L]}")
    check(lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None,
          f"{tag}: the first prompt token must have null logprob and top_logprobs")
    n_offsets = L + (1 if n_generated else 0)  # the prompt's, then the first generated one's
    check(lp["text_offset"][:n_offsets] == list(range(n_offsets)),
          f"{tag}: text offsets {lp['text_offset'][:n_offsets]} (one byte per token)")
    for i, (want_lp, _, want_top, want_top_lp) in enumerate(want, start=1):
        got = lp["token_logprobs"][i]
        check(abs(got - want_lp) < TOL, f"{tag}: prompt token {i}: logprob {got} vs ref {want_lp}")
        # Keyed by display string: on a collision the likelier entry stays.
        want_top_map = {}
        for t, v in zip(want_top, want_top_lp):
            want_top_map.setdefault(display(t), v)
        top = lp["top_logprobs"][i]
        check(set(top) == set(want_top_map),  # JSON objects carry no order
              f"{tag}: prompt token {i}: top {list(top)} vs ref {want_top}")
        for key, v in want_top_map.items():
            check(abs(top.get(key, 1e9) - v) < TOL,
                  f"{tag}: prompt token {i}: top {key!r} logprob {top.get(key)} vs ref {v}")
    pl = choice.get("prompt_logprobs")
    check(isinstance(pl, list) and len(pl) == L and pl[0] is None,
          f"{tag}: prompt_logprobs must be [null, ...] of {L} entries")
    if isinstance(pl, list) and len(pl) == L:
        for i, (want_lp, want_rank, want_top, _) in enumerate(want, start=1):
            entry = pl[i]
            me = entry.get(str(ids[i]), {})
            check(abs(me.get("logprob", 1e9) - want_lp) < TOL and me.get("rank") == want_rank,
                  f"{tag}: prompt_logprobs[{i}] {me} vs ref logprob {want_lp} rank {want_rank}")
            check(set(entry) == {str(ids[i])} | {str(t) for t in want_top},
                  f"{tag}: prompt_logprobs[{i}] keys {sorted(entry)}")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    bmserve, work = sys.argv[1:]
    torch.set_num_threads(1)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    model_dir = os.path.join(work, "tiny")
    subprocess.run([bmserve, "make-model", "--preset", "tiny", "--out", model_dir, "--seed", "29",
                    "--dtype", "fp32"], check=True, capture_output=True)
    config, weights = ref.load_checkpoint(model_dir)
    model = ref.BlackMamba(config, weights)
    ids = list(PROMPT.encode())
    want = reference_scores(model, ids)
    body = {"prompt": PROMPT, "max_tokens": 3, "temperature": 0, "echo": True, "logprobs": TOP,
            "prompt_logprobs": TOP, "ignore_eos": True}

    # A budget below the prompt length: prefilled in chunks, scores gathered across them.
    for budget in ("64", "7"):
        server = DemoServer(bmserve, "--max-num-batched-tokens", budget, model=model_dir)
        try:
            status, resp = post(server.port, "/v1/completions", body)
            check(status == 200, f"budget {budget}: status {status}: {resp}")
            if status == 200:
                check_completion(f"budget {budget}", resp["choices"][0], ids, want, 3)
                whole = resp["choices"][0]
            status, chunks = post(server.port, "/v1/completions", dict(body, stream=True),
                                  stream=True)
            check(status == 200, f"budget {budget} stream: status {status}")
            if status == 200 and chunks:
                text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
                check(text == whole["text"], f"budget {budget} stream: text {text!r}")
                merged = {k: [] for k in ("tokens", "token_logprobs")}
                scored = [c["choices"][0] for c in chunks
                          if c["choices"] and "prompt_logprobs" in c["choices"][0]]
                check(len(scored) == 1, f"budget {budget} stream: {len(scored)} chunks carry "
                      "prompt_logprobs, want 1")
                for c in chunks:
                    if c["choices"] and c["choices"][0]["logprobs"]:
                        for k in merged:
                            merged[k] += c["choices"][0]["logprobs"][k]
                check(merged["tokens"] == whole["logprobs"]["tokens"] and
                      merged["token_logprobs"] == whole["logprobs"]["token_logprobs"],
                      f"budget {budget} stream: streamed logprobs differ from the response")
                if scored:
                    check(scored[0]["text"].startswith(PROMPT),
                          f"budget {budget} stream: the echo must travel with the scores")
                    check(scored[0]["prompt_logprobs"] == whole["prompt_logprobs"],
                          f"budget {budget} stream: prompt_logprobs differ from the response")
            if budget == "64":
                # echo without logprobs: no scores; prompt_logprobs alone: no echo.
                status, r2 = post(server.port, "/v1/completions",
                                  {"prompt": PROMPT, "max_tokens": 2, "echo": True})
                check(status == 200 and r2["choices"][0]["logprobs"] is None and
                      "prompt_logprobs" not in r2["choices"][0], f"plain echo: {r2}")
                status, r3 = post(server.port, "/v1/completions",
                                  {"prompt": PROMPT, "max_tokens": 2, "prompt_logprobs": 0})
                c3 = r3["choices"][0] if status == 200 else {}
                check(status == 200 and not c3["text"].startswith(PROMPT) and
                      len(c3["prompt_logprobs"]) == len(ids) and
                      set(c3["prompt_logprobs"][1]) == {str(ids[1])},
                      f"prompt_logprobs 0 without echo: {r3}")
                status, r4 = post(server.port, "/v1/chat/completions",
                                  {"messages": [{"role": "user", "content": "hi"}],
                                   "max_tokens": 2, "prompt_logprobs": 1})
                c4 = r4["choices"][0] if status == 200 else {}
                pl = c4.get("prompt_logprobs") or []
                check(status == 200 and len(pl) == r4["usage"]["prompt_tokens"] and
                      pl[0] is None and all(e is not None and len(e) in (1, 2) for e in pl[1:]),
                      f"chat prompt_logprobs: {r4}")
                # max_tokens 0: the prompt scored, nothing generated (legacy OpenAI scoring).
                score = {"prompt": PROMPT, "max_tokens": 0, "echo": True, "logprobs": TOP,
                         "prompt_logprobs": TOP}
                status, r5 = post(server.port, "/v1/completions", score)
                check(status == 200, f"max_tokens 0: {status} {r5}")
                if status == 200:
                    c5 = r5["choices"][0]
                    check(c5["text"] == PROMPT and c5["finish_reason"] == "length" and
                          r5["usage"]["completion_tokens"] == 0, f"max_tokens 0: {r5}")
                    check_completion("max_tokens 0", c5, ids, want, 0)
                status, chunks5 = post(server.port, "/v1/completions", dict(score, stream=True),
                                       stream=True)
                texts = [c["choices"][0]["text"] for c in chunks5 if c["choices"]]
                check(status == 200 and "".join(texts) == PROMPT,
                      f"max_tokens 0 stream: {status} {texts}")
                status, r6 = post(server.port, "/v1/completions",
                                  {"prompt": PROMPT, "max_tokens": 0, "echo": True})
                check(status == 400 and r6["error"]["param"] == "max_tokens",
                      f"max_tokens 0 without scoring: {status} {r6}")
                for bad in (21, -1, "2"):
                    status, err = post(server.port, "/v1/completions",
                                       {"prompt": PROMPT, "prompt_logprobs": bad})
                    check(status == 400 and err["error"]["param"] == "prompt_logprobs",
                          f"prompt_logprobs {bad!r}: {status} {err}")
        finally:
            server.stop()
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

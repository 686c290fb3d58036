#!/usr/bin/env bash
# e2e: `bmserve generate` runs through the engine: greedy output is deterministic and the same
# whatever the prefill chunking, --json prints one object with the documented keys, n > 1 gives
# "choices", and bad input is a clear error naming the field (exit code 2), never a crash.
set -u
BMSERVE="$1"
PY=/usr/bin/python3
fail() { echo "FAIL: $*"; exit 1; }

a=$("$BMSERVE" generate --preset tiny --prompt-ids 1,2,3 --max-tokens 12 --temperature 0 --json 2>/dev/null) || fail "greedy run"
b=$("$BMSERVE" generate --preset tiny --prompt-ids 1,2,3 --max-tokens 12 --temperature 0 --json \
      --max-num-batched-tokens 1 2>/dev/null) || fail "chunked run"
[ "$a" = "$b" ] || fail "greedy output differs with chunked prefill: $a vs $b"
echo "$a" | $PY -c '
import json, sys
o = json.loads(sys.stdin.read())
assert o["prompt_ids"] == [1, 2, 3], o
ids = o["generated_ids"]
assert all(isinstance(i, int) and 0 <= i < 512 for i in ids), ids
assert (o["finish_reason"] == "length" and len(ids) == 12) or o["finish_reason"] == "stop", o
assert "text" in o
' || fail "greedy JSON: $a"

c=$("$BMSERVE" generate --preset tiny --prompt-ids 5,6 --max-tokens 6 --temperature 1 --seed 9 --n 3 \
      --ignore-eos --json 2>/dev/null) || fail "n=3 run"
d=$("$BMSERVE" generate --preset tiny --prompt-ids 5,6 --max-tokens 6 --temperature 1 --seed 9 --n 3 \
      --ignore-eos --json 2>/dev/null) || fail "n=3 rerun"
[ "$c" = "$d" ] || fail "seeded output not reproducible"
echo "$c" | $PY -c '
import json, sys
o = json.loads(sys.stdin.read())
ch = o["choices"]
assert [c["index"] for c in ch] == [0, 1, 2], ch
assert all(len(c["generated_ids"]) == 6 for c in ch), ch
' || fail "n=3 JSON: $c"

# Prompt scoring: --max-tokens 0 scores without generating; the scores and their sum agree
# with a generating run's; max_tokens 0 without scoring is an error naming it.
s0=$("$BMSERVE" generate --preset tiny --prompt-ids 7,8,9,10,11 --max-tokens 0 --prompt-logprobs 2 \
      --json 2>/dev/null) || fail "score-only run"
s1=$("$BMSERVE" generate --preset tiny --prompt-ids 7,8,9,10,11 --max-tokens 3 --temperature 0 \
      --prompt-logprobs 2 --json --max-num-batched-tokens 2 2>/dev/null) || fail "scored generating run"
$PY -c '
import json, math, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert a["generated_ids"] == [] and a["finish_reason"] == "length", a
assert len(b["generated_ids"]) == 3, b
pa, pb = a["prompt_logprobs"], b["prompt_logprobs"]
assert pa[0] is None and len(pa) == 5 and len(pb) == 5, (pa, pb)
assert [e["id"] for e in pa[1:]] == [8, 9, 10, 11], pa
for x, y in zip(pa[1:], pb[1:]):
    assert abs(x["logprob"] - y["logprob"]) < 1e-4 and x["rank"] == y["rank"], (x, y)
    assert len(x["top"]) == 2 and x["top"][0]["logprob"] >= x["logprob"] - 1e-6, x
    assert x["rank"] >= 1 and (x["rank"] > 1 or x["top"][0]["id"] == x["id"]), x
assert abs(a["prompt_logprob_sum"] - sum(e["logprob"] for e in pa[1:])) < 1e-4, a
' "$s0" "$s1" || fail "prompt scoring: $s0 / $s1"
err=$("$BMSERVE" generate --preset tiny --prompt-ids 1,2 --max-tokens 0 2>&1 >/dev/null)
[ $? -eq 2 ] || fail "max-tokens 0 without scoring: exit code"
echo "$err" | grep -q "max_tokens" || fail "max-tokens 0 message: $err"

err=$("$BMSERVE" generate --preset tiny --prompt-ids 1 --temperature 5 2>&1 >/dev/null)
rc=$?
[ $rc -eq 2 ] || fail "bad temperature: exit code $rc"
echo "$err" | grep -q "temperature must be in \[0, 2\]" || fail "bad temperature message: $err"
err=$("$BMSERVE" generate --preset tiny --prompt-ids 1,x 2>&1 >/dev/null)
[ $? -eq 2 ] || fail "bad prompt ids exit code"
echo "$err" | grep -q "prompt-ids" || fail "bad prompt ids message: $err"
echo PASS

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

err=$("$BMSERVE" generate --preset tiny --prompt-ids 1 --temperature 5 2>&1 >/dev/null)
rc=$?
[ $rc -eq 2 ] || fail "bad temperature: exit code $rc"
echo "$err" | grep -q "temperature must be in \[0, 2\]" || fail "bad temperature message: $err"
err=$("$BMSERVE" generate --preset tiny --prompt-ids 1,x 2>&1 >/dev/null)
[ $? -eq 2 ] || fail "bad prompt ids exit code"
echo "$err" | grep -q "prompt-ids" || fail "bad prompt ids message: $err"
echo PASS

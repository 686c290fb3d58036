#!/bin/sh
# End-to-end check of `bmserve make-model` and `bmserve inspect` (ctest label e2e).
# usage: cli_test.sh BMSERVE
set -u
BMSERVE=$1
DIR=$(mktemp -d "${TMPDIR:-/tmp}/bms_cli_XXXXXX")
trap 'rm -rf "$DIR"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$BMSERVE" make-model --preset tiny --out "$DIR/t" --format torch --dtype fp16 --seed 4 \
  > "$DIR/out" 2>&1 || fail "make-model torch: $(cat "$DIR/out")"
[ -f "$DIR/t/pytorch_model.bin" ] && [ -f "$DIR/t/config.json" ] || fail "torch files missing"
"$BMSERVE" inspect --model "$DIR/t" > "$DIR/out" 2>&1 || fail "inspect: $(cat "$DIR/out")"
grep -q "torch, 61 tensors" "$DIR/out" || fail "inspect tensor count: $(cat "$DIR/out")"
grep -q "decoder.layers.0.mixer.A_log  *F16  *\[128, 16\]" "$DIR/out" || fail "inspect listing"
grep -q "^OK" "$DIR/out" || fail "inspect verdict"

"$BMSERVE" make-model --preset tiny --out "$DIR/s" --shard-bytes 300000 > "$DIR/out" 2>&1 ||
  fail "make-model sharded: $(cat "$DIR/out")"
[ -f "$DIR/s/model.safetensors.index.json" ] || fail "no shard index"
# A config that disagrees with the weights: inspect lists the problems and exits 1.
sed 's/"hidden_size": 64/"hidden_size": 32/' "$DIR/s/config.json" > "$DIR/c" && mv "$DIR/c" "$DIR/s/config.json"
"$BMSERVE" inspect --model "$DIR/s" --quiet > "$DIR/out" 2>&1
[ $? -eq 1 ] || fail "inspect should exit 1 on a mismatch"
grep -q "tensor embedding.word_embeddings.weight has shape \[512, 64\], expected \[512, 32\]" \
  "$DIR/out" || fail "mismatch not reported: $(cat "$DIR/out")"

"$BMSERVE" make-model --preset tiny --out "$DIR/x" --dtype fp8 > "$DIR/out" 2>&1
[ $? -eq 2 ] || fail "bad --dtype should exit 2"
grep -q "unknown dtype 'fp8'" "$DIR/out" || fail "bad --dtype message"
"$BMSERVE" make-model --preset tiny > "$DIR/out" 2>&1
[ $? -eq 2 ] && grep -q -- "--out is required" "$DIR/out" || fail "missing --out"
"$BMSERVE" inspect --model "$DIR/nothing" > "$DIR/out" 2>&1
[ $? -eq 1 ] && grep -q "no weights found" "$DIR/out" || fail "empty dir: $(cat "$DIR/out")"
echo "PASS"

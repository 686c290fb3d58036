#!/usr/bin/env bash
# e2e (CPU): `bmserve bench` is in the command table, prints its flags, rejects a bad flag with
# exit 2 naming it, and without a usable GPU (or without CUDA) fails with exit 1 and a message
# that says why, never a crash. Usage: bench_cmd_test.sh BMSERVE
set -u
B=$1
fail=0
check() { if [ "$1" = ok ]; then echo "ok   $2"; else echo "FAIL $2"; fail=1; fi; }
out=$("$B" --help 2>&1)
echo "$out" | grep -q "^  bench " && check ok "bench in the command list" || check no "bench in the command list"
echo "$out" | grep -q "^  bench-engine " && check ok "bench-engine still listed" || check no "bench-engine still listed"
out=$("$B" bench --help 2>&1); rc=$?
[ $rc = 0 ] && echo "$out" | grep -q -- "--capacity" && check ok "bench --help" || check no "bench --help (rc $rc)"
out=$("$B" bench --bogus=1 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "unknown flag --bogus" && check ok "bad flag: exit 2" || check no "bad flag (rc $rc): $out"
out=$("$B" bench --batches=1,x 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q -- "--batches" && check ok "bad value: exit 2" || check no "bad value (rc $rc)"
out=$("$B" bench --presets=nosuch 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -qi "nosuch\|CUDA\|GPU" && check ok "unknown preset or no GPU: exit 1" || check no "preset (rc $rc): $out"
if ! command -v nvidia-smi > /dev/null 2>&1; then
  out=$(timeout 60 "$B" bench --presets=blackmamba-1.5b --capacity=false 2>&1); rc=$?
  [ $rc = 1 ] && echo "$out" | grep -qi "CUDA\|GPU" && check ok "no GPU: exit 1 with the reason" \
    || check no "no GPU (rc $rc): $out"
fi
exit $fail

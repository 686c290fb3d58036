#!/usr/bin/env bash
# Runs libFuzzer targets: fuzz/run.sh TARGET SECONDS, or fuzz/run.sh all SECONDS (each target in
# turn). Builds them first (clang, build folder ${BMS_FUZZ_BUILD:-build-fuzz}). Each run starts
# from the committed seed corpus fuzz/corpus/TARGET (new inputs go to a scratch copy; crashes to
# ${BMS_FUZZ_ARTIFACTS:-build-fuzz/artifacts}); prints the executions per target and exits
# non-zero when any target crashed. Targets: openai_request chat_template tokenizer safetensors
# pickle grpc_convert. BMS_FUZZ_TOKENIZER=path/tokenizer.json fuzzes a real BPE tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(openai_request chat_template tokenizer safetensors pickle grpc_convert)
target=${1:?usage: fuzz/run.sh TARGET|all SECONDS}
seconds=${2:?usage: fuzz/run.sh TARGET|all SECONDS}
build=${BMS_FUZZ_BUILD:-build-fuzz}
artifacts=${BMS_FUZZ_ARTIFACTS:-$build/artifacts}
if [[ $target == all ]]; then list=("${TARGETS[@]}"); else list=("$target"); fi
if [[ ! -f $build/build.ninja ]]; then
  cmake -S . -B "$build" -G Ninja -DBMS_CUDA=OFF -DBMS_FUZZ=ON -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j "${JOBS:-2}" --target "${list[@]/#/fuzz_}"
mkdir -p "$artifacts"
status=0
summary=""
for t in "${list[@]}"; do
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$t/." "$work/" 2>/dev/null || true
  log="$artifacts/$t.log"
  echo "== fuzz_$t for ${seconds}s"
  if ! ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
      "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
      -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/${t}-" "$work" >"$log" 2>&1; then
    status=1
    tail -40 "$log"
    echo "fuzz_$t: FAILED (see $log and $artifacts/${t}-*)"
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  summary+=$(printf '%-16s %12s executions\n' "$t" "$execs")$'\n'
  rm -rf "$work"
done
echo "== fuzz summary (${seconds}s each)"
printf '%s' "$summary"
exit $status

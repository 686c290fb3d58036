// Reference numbers: HF `tokenizers` (Rust, via the @anush008/tokenizers Node binding) encoding
// the same file single-threaded. Usage: node bench_hf.js TOKENIZER_JSON INPUT_TEXT [ITERATIONS]
'use strict';
const fs = require('fs');
const { Tokenizer } = require('@anush008/tokenizers');

function checksum(ids) {  // FNV-1a 64-bit over the ids, as bench_tokenizer.cc computes it
  let h = 1469598103934665603n;
  const mask = (1n << 64n) - 1n;
  for (const id of ids) {
    h ^= BigInt(id >>> 0);
    h = (h * 1099511628211n) & mask;
  }
  return h.toString(16).padStart(16, '0');
}

async function main() {
  const [tokenizerPath, inputPath, iterArg] = process.argv.slice(2);
  const iterations = Math.max(1, parseInt(iterArg || '5', 10));
  const text = fs.readFileSync(inputPath, 'utf8');
  const mb = Buffer.byteLength(text, 'utf8') / 1e6;
  let t = process.hrtime.bigint();
  const tok = Tokenizer.fromFile(tokenizerPath);
  console.log(`hf-rust  load      ${(Number(process.hrtime.bigint() - t) / 1e6).toFixed(1).padStart(8)} ms`);
  // CPU seconds of the whole process (the encode runs on a libuv worker thread).
  const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };
  const times = [];
  const cpuTimes = [];
  let enc;
  for (let i = 0; i < iterations; i++) {
    const c = cpu();
    t = process.hrtime.bigint();
    enc = await tok.encode(text, null, { addSpecialTokens: false });
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
    cpuTimes.push(cpu() - c);
  }
  // Cold: the first call (empty word cache); warm: the median of the others.
  const coldWarm = (ts) => {
    const rest = ts.slice(iterations > 1 ? 1 : 0).sort((a, b) => a - b);
    return [ts[0], rest[Math.floor((rest.length - 1) / 2)]];
  };
  const [cold, warm] = coldWarm(times);
  const [cpuCold, cpuWarm] = coldWarm(cpuTimes);
  const ids = enc.getIds();
  const f = (x) => x.toFixed(2).padStart(7);
  console.log(`hf-rust  encode    cold ${f(mb / cold)} MB/s   warm(median) ${f(mb / warm)} MB/s   ` +
              `per CPU-second: cold ${f(mb / cpuCold)} warm ${f(mb / cpuWarm)} MB/s   ` +
              `${ids.length} ids  checksum ${checksum(ids)}`);
  // Line by line (each line with its '\n'), batched so the per-call overhead of Node is paid once.
  const lines = text.split(/(?<=\n)/);
  const lc = cpu();
  t = process.hrtime.bigint();
  const encs = await tok.encodeBatch(lines, { addSpecialTokens: false });
  const lt = Number(process.hrtime.bigint() - t) / 1e9;
  const lcpu = cpu() - lc;
  const lineIds = [].concat(...encs.map((e) => e.getIds()));
  console.log(`hf-rust  lines     ${f(mb / lt)} MB/s   per CPU-second ${f(mb / lcpu)} MB/s   ${lines.length} lines  ` +
              `${lineIds.length} ids  checksum ${checksum(lineIds)}`);
  t = process.hrtime.bigint();
  const back = await tok.decode(ids, false);
  const dt = Number(process.hrtime.bigint() - t) / 1e9;
  console.log(`hf-rust  decode    ${(mb / dt).toFixed(2).padStart(7)} MB/s   roundtrip ${back === text ? 'exact' : 'DIFFERS'}`);
}

main().catch((e) => { console.error(e); process.exit(1); });

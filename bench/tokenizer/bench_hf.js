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
  const times = [];
  let enc;
  for (let i = 0; i < iterations; i++) {
    t = process.hrtime.bigint();
    enc = await tok.encode(text, null, { addSpecialTokens: false });
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  const cold = times[0];
  const rest = times.slice(iterations > 1 ? 1 : 0).sort((a, b) => a - b);
  const warm = rest[Math.floor((rest.length - 1) / 2)];
  const ids = enc.getIds();
  console.log(`hf-rust  encode    cold ${(mb / cold).toFixed(2).padStart(7)} MB/s   ` +
              `warm(median) ${(mb / warm).toFixed(2).padStart(7)} MB/s   ${ids.length} ids  checksum ${checksum(ids)}`);
  // Line by line (each line with its '\n'), batched so the per-call overhead of Node is paid once.
  const lines = text.split(/(?<=\n)/);
  t = process.hrtime.bigint();
  const encs = await tok.encodeBatch(lines, { addSpecialTokens: false });
  const lt = Number(process.hrtime.bigint() - t) / 1e9;
  const lineIds = [].concat(...encs.map((e) => e.getIds()));
  console.log(`hf-rust  lines     ${(mb / lt).toFixed(2).padStart(7)} MB/s   ${lines.length} lines  ` +
              `${lineIds.length} ids  checksum ${checksum(lineIds)}`);
  t = process.hrtime.bigint();
  const back = await tok.decode(ids, false);
  const dt = Number(process.hrtime.bigint() - t) / 1e9;
  console.log(`hf-rust  decode    ${(mb / dt).toFixed(2).padStart(7)} MB/s   roundtrip ${back === text ? 'exact' : 'DIFFERS'}`);
}

main().catch((e) => { console.error(e); process.exit(1); });

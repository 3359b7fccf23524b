/**
 * Reading one large OVSDB reply (a northbound select of many ports, as at 1 000 hosts' worth of rows),
 * delivered in 64 KiB chunks as a socket delivers it, two ways side by side in one process: the reader the
 * client had before (the text gathered in one string and scanned on from where it stopped, JSON.parse at
 * the end) and JsonStream (each chunk parsed once into the values under construction). Prints, for 4, 16
 * and 50 MiB, the total time and how long the event loop was held by one chunk (p99 and longest; the longest
 * are the garbage collector's pauses as the reply's objects fill the heap), three rounds each.
 *
 *   node --expose-gc dist/bench/ovsdb-reply.js [MiB...]
 */
import { JsonStream } from '../src/adapters/json-stream.js';

/** The reader before JsonStream, kept here as the baseline. */
class GatheringReader {
  private buffer = '';
  private depth = 0;
  private inString = false;
  private escaped = false;
  private scanned = 0;

  push(chunk: string): unknown[] {
    this.buffer += chunk;
    const out: unknown[] = [];
    let start = 0;
    for (let i = this.scanned; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.inString = false;
        continue;
      }
      if (c === '"') this.inString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') {
        this.depth--;
        if (this.depth === 0) {
          out.push(JSON.parse(this.buffer.slice(start, i + 1)));
          start = i + 1;
        }
      } else if (this.depth === 0 && c !== undefined && /\s/.test(c)) {
        start = i + 1;
      }
    }
    this.buffer = this.buffer.slice(start);
    this.scanned = this.buffer.length;
    return out;
  }
}

/** A reply to a select of Logical_Switch_Port rows, about `mib` MiB of JSON. */
function reply(mib: number): Buffer {
  const rows: unknown[] = [];
  let size = 0;
  for (let i = 0; size < mib * 1024 * 1024; i++) {
    const row = {
      _uuid: ['uuid', `${i.toString(16).padStart(8, '0')}-5e1f-4c2a-9d3b-${i.toString(16).padStart(12, '0')}`],
      name: `ovsnet-10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      addresses: ['set', [`02:42:0a:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}:01 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`]],
      port_security: ['set', [`02:42:0a:00:00:01 10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`]],
      external_ids: ['map', [['ovsnet-owner', 'ovsnet'], ['ovsnet-chassis', `host-${i % 1000}`], ['ovsnet-endpoint', `${i.toString(16).padStart(64, 'e')}`], ['note', 'caf\u00e9 "quoted"']]],
    };
    size += JSON.stringify(row).length + 1;
    rows.push(row);
  }
  return Buffer.from(JSON.stringify({ id: 7, error: null, result: [{ rows }] }));
}

function read(make: () => { push(chunk: string): unknown[] }, wire: Buffer): { totalMs: number; worstMs: number; p99Ms: number; count: number } {
  const reader = make();
  const decoder = new TextDecoder();
  (globalThis as { gc?: () => void }).gc?.();
  let worst = 0;
  let count = 0;
  const times: number[] = [];
  const start = performance.now();
  for (let at = 0; at < wire.length; at += 65_536) {
    const text = decoder.decode(wire.subarray(at, at + 65_536), { stream: true });
    const t = performance.now();
    count += reader.push(text).length;
    times.push(performance.now() - t);
    worst = Math.max(worst, times[times.length - 1]!);
  }
  times.sort((a, b) => a - b);
  return { totalMs: performance.now() - start, worstMs: worst, p99Ms: times[Math.ceil(0.99 * times.length) - 1]!, count };
}

function main(): void {
  const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
  if (!(globalThis as { gc?: unknown }).gc) console.log('(run with node --expose-gc for a collected heap before each read)');
  for (const mib of sizes.length ? sizes : [4, 16, 50]) {
    const wire = reply(mib);
    console.log(`${(wire.length / 1048576).toFixed(1)} MiB reply, ${Math.ceil(wire.length / 65_536)} chunks of 64 KiB`);
    for (let round = 1; round <= 3; round++) {
      for (const [name, make] of [
        ['gathered, JSON.parse at the end', () => new GatheringReader()],
        ['JsonStream', () => new JsonStream()],
      ] as const) {
        const r = read(make, wire);
        if (r.count !== 1) throw new Error(`${name} read ${r.count} replies, not 1`);
        console.log(`  round ${round}  ${name.padEnd(32)} total ${r.totalMs.toFixed(0).padStart(6)} ms   per chunk p99 ${r.p99Ms.toFixed(1).padStart(6)} ms, longest ${r.worstMs.toFixed(1).padStart(7)} ms`);
      }
    }
  }
}

main();

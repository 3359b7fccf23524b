/** What the benchmarks share: dockerd's way of calling the plugin, quantiles, a process's memory. */
import http from 'node:http';
import { readFile } from 'node:fs/promises';

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

/** One protocol call on the plugin's socket, as dockerd makes it (one keep-alive connection). */
export function call(socket: string, method: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, agent, method: 'POST', path: `/${method}`, headers: { 'Content-Length': Buffer.byteLength(text), Accept: 'application/vnd.docker.plugins.v1.2+json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(text);
  });
}

/** A call that must succeed. */
export async function ok(socket: string, method: string, body: unknown): Promise<Record<string, unknown>> {
  const { status, json } = await call(socket, method, body);
  if (status !== 200 || json.Err || json.Error) throw new Error(`${method} failed (${status}): ${JSON.stringify(json)}`);
  return json;
}

export function closeCalls(): void {
  agent.destroy();
}

export function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** The middle value, or the mean of the two middle values of an even count (a few rounds of bursts). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const half = sorted.length >> 1;
  return sorted.length % 2 ? sorted[half]! : (sorted[half - 1]! + sorted[half]!) / 2;
}

export const ms = (v: number) => `${v.toFixed(2).padStart(7)} ms`;
export const stats = (v: number[]) => `p50 ${ms(quantile(v, 0.5))}  p99 ${ms(quantile(v, 0.99))}  max ${ms(Math.max(...v))}`;

export async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

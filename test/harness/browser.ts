/**
 * Whether names are visible in an SVG picture, as a real browser draws it: Chromium (Debian's, installed by
 * test/install-test-tools.sh) loads a page with the SVG inline, headless, and a script there looks for each
 * name's text element, its size on the page, and whether it is the element drawn at its centre (not covered,
 * not off the page). The page's title carries the answer back through --dump-dom.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { cmd } from '../e2e/harness/proc.js';

export type Seen = 'visible' | 'hidden' | 'missing';

/** `onHidden` is told, for each name found but not seen, where it is and what covers it. */
export async function visibleInSvg(svg: string, names: readonly string[], onHidden?: (why: Record<string, string>) => void): Promise<Record<string, Seen>> {
  const start = svg.indexOf('<svg');
  if (start < 0) throw new Error(`not an SVG picture: ${svg.slice(0, 200)}`);
  const inline = svg.slice(start);
  // The window holds the whole picture (Graphviz gives its size in points).
  const size = (attr: string) => Math.ceil(Number(new RegExp(`${attr}="([\\d.]+)pt"`).exec(inline)?.[1] ?? 1000) * (4 / 3)) + 400;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ovsnet-browser-'));
  try {
    const page = path.join(dir, 'page.html');
    await writeFile(
      page,
      `<!doctype html><html><head><title>pending</title><style>body{margin:0}</style></head><body>${inline}
<script>
const names = ${JSON.stringify(names)};
const seen = {};
const why = {};
for (const name of names) {
  const text = [...document.querySelectorAll('svg text')].find((t) => t.textContent.includes(name));
  if (!text) { seen[name] = 'missing'; continue; }
  const r = text.getBoundingClientRect();
  const at = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
  seen[name] = r.width > 0 && r.height > 0 && at !== null && (at === text || text.contains(at)) ? 'visible' : 'hidden';
  if (seen[name] === 'hidden') why[name] = \`at \${Math.round(r.x)},\${Math.round(r.y)} size \${Math.round(r.width)}x\${Math.round(r.height)} in \${innerWidth}x\${innerHeight}: \${at ? at.tagName + ' ' + (at.textContent || '').slice(0, 40) : 'nothing'} on top\`;
}
document.title = JSON.stringify({ seen, why });
</script></body></html>`,
    );
    const { stdout } = await cmd('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', `--user-data-dir=${path.join(dir, 'profile')}`, `--window-size=${size('width')},${size('height')}`, '--dump-dom', `file://${page}`], { timeoutMs: 60_000 });
    const title = /<title>(.*?)<\/title>/s.exec(stdout)?.[1];
    if (!title || title === 'pending') throw new Error(`Chromium did not run the page's check: ${stdout.slice(0, 300)}`);
    const answer = JSON.parse(title.replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')) as { seen: Record<string, Seen>; why: Record<string, string> };
    onHidden?.(answer.why);
    return answer.seen;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

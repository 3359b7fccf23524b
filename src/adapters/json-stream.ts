/**
 * Reads the JSON texts an OVSDB server sends back to back, unframed (RFC 7047), as they arrive: each chunk
 * is parsed once, into the values under construction, so a reply of tens of MiB costs time in proportion to
 * its size and blocks the event loop only for one chunk at a time. (Gathering a whole text and then handing
 * it to JSON.parse costs a copy of the text so far per chunk, and one long parse at the end.)
 *
 * Strings are found with indexOf and sliced; only a string with an escape in it is decoded by JSON.parse.
 * Numbers, true, false and null are gathered until a delimiter and decoded by JSON.parse too.
 */

const enum Expect {
  /** A value: at the top level, after '[', ':' or ',' in an array. */
  Value,
  /** A key (or '}' right after '{'); after ',' in an object, a key only. */
  Key,
  Colon,
  /** ',' or the closing bracket of the container. */
  Next,
}

/** A container under construction: an array, or an object and the key its next value goes under. */
interface Frame {
  readonly array: unknown[] | undefined;
  readonly object: Record<string, unknown> | undefined;
  key: string;
}

const QUOTE = 34;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f]/;
const BACKSLASH = 92;

function isSpace(c: number): boolean {
  return c === 32 || c === 10 || c === 13 || c === 9;
}

function isDelimiter(c: number): boolean {
  return c === 44 || c === 93 || c === 125 || isSpace(c); // , ] } or whitespace
}

export class JsonStreamError extends Error {}

export class JsonStream {
  private readonly stack: Frame[] = [];
  private expect = Expect.Value;
  /** Right after '[' or '{': the closing bracket may come instead of a value or key. */
  private opened = false;
  /** A string being read across chunks: its raw pieces so far (escapes undecoded), and whether it is a key. */
  private text: string[] | undefined;
  private inText = false;
  private textIsKey = false;
  /** Backslashes at the end of the string read so far (an odd run escapes the next character). */
  private trailingBackslashes = 0;
  /** A number or literal being read. */
  private scalar: string | undefined;

  /** Takes the next chunk; returns the texts it completed, parsed. Throws JsonStreamError on invalid JSON. */
  push(chunk: string): unknown[] {
    const out: unknown[] = [];
    const n = chunk.length;
    let i = 0;
    if (this.inText) i = this.readString(chunk, 0, out);
    else if (this.scalar !== undefined) i = this.readScalar(chunk, 0, out);
    while (i < n) {
      const c = chunk.charCodeAt(i);
      if (isSpace(c)) {
        i++;
        continue;
      }
      switch (this.expect) {
        case Expect.Value:
          if (c === QUOTE) {
            this.textIsKey = false;
            i = this.startString(chunk, i + 1, out);
          } else if (c === 123 /* { */) {
            this.stack.push({ array: undefined, object: {}, key: '' });
            this.expect = Expect.Key;
            this.opened = true;
            i++;
          } else if (c === 91 /* [ */) {
            this.stack.push({ array: [], object: undefined, key: '' });
            this.opened = true;
            i++;
          } else if (c === 93 /* ] */ && this.opened) {
            i++;
            this.close(out);
          } else if (c === 45 || (c >= 48 && c <= 57) || c === 116 || c === 102 || c === 110) {
            this.scalar = '';
            i = this.readScalar(chunk, i, out);
          } else {
            throw this.unexpected(chunk, i, 'a value');
          }
          break;
        case Expect.Key:
          if (c === QUOTE) {
            this.textIsKey = true;
            i = this.startString(chunk, i + 1, out);
          } else if (c === 125 /* } */ && this.opened) {
            i++;
            this.close(out);
          } else {
            throw this.unexpected(chunk, i, 'a key');
          }
          break;
        case Expect.Colon:
          if (c !== 58) throw this.unexpected(chunk, i, "':'");
          this.expect = Expect.Value;
          this.opened = false;
          i++;
          break;
        case Expect.Next: {
          const frame = this.stack[this.stack.length - 1]!;
          if (c === 44 /* , */) {
            this.expect = frame.array ? Expect.Value : Expect.Key;
            this.opened = false;
            i++;
          } else if (c === (frame.array ? 93 : 125)) {
            i++;
            this.close(out);
          } else {
            throw this.unexpected(chunk, i, "',' or the end of the container");
          }
          break;
        }
      }
    }
    return out;
  }

  /** Reads a string whose content starts at `i`; returns where it stopped. */
  private startString(chunk: string, i: number, out: unknown[]): number {
    this.inText = true;
    this.text = undefined;
    this.trailingBackslashes = 0;
    return this.readString(chunk, i, out);
  }

  /** Reads string content from `i` up to its closing quote (or the end of the chunk); returns where it stopped. */
  private readString(chunk: string, i: number, out: unknown[]): number {
    let from = i;
    for (;;) {
      const quote = chunk.indexOf('"', from);
      if (quote === -1) {
        const rest = chunk.slice(i);
        (this.text ??= []).push(rest);
        let run = 0;
        while (run < rest.length && rest.charCodeAt(rest.length - 1 - run) === BACKSLASH) run++;
        this.trailingBackslashes = run === rest.length ? this.trailingBackslashes + run : run;
        return chunk.length;
      }
      let run = 0;
      while (quote - 1 - run >= i && chunk.charCodeAt(quote - 1 - run) === BACKSLASH) run++;
      if (quote - run === i) run += this.trailingBackslashes;
      if (run % 2 === 1) {
        from = quote + 1; // an escaped quote: part of the string
        continue;
      }
      let raw = chunk.slice(i, quote);
      if (this.text) {
        this.text.push(raw);
        raw = this.text.join('');
        this.text = undefined;
      }
      this.inText = false;
      let value = raw;
      if (CONTROL.test(raw)) throw new JsonStreamError('invalid JSON: a control character inside a string');
      if (raw.includes('\\')) {
        try {
          value = JSON.parse(`"${raw}"`) as string;
        } catch (err) {
          throw new JsonStreamError(`invalid string: ${(err as Error).message}`);
        }
      }
      if (this.textIsKey) {
        this.stack[this.stack.length - 1]!.key = value;
        this.expect = Expect.Colon;
      } else {
        this.complete(value, out);
      }
      return quote + 1;
    }
  }

  /** Reads a number or literal from `i` up to a delimiter (or the end of the chunk); returns where it stopped. */
  private readScalar(chunk: string, i: number, out: unknown[]): number {
    let end = i;
    while (end < chunk.length && !isDelimiter(chunk.charCodeAt(end))) end++;
    this.scalar += chunk.slice(i, end);
    if (end === chunk.length) return end; // it may go on in the next chunk
    const text = this.scalar!;
    this.scalar = undefined;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new JsonStreamError(`invalid JSON value ${JSON.stringify(text.slice(0, 40))}`);
    }
    this.complete(value, out);
    return end;
  }

  private close(out: unknown[]): void {
    const frame = this.stack.pop()!;
    this.complete(frame.array ?? frame.object, out);
  }

  private complete(value: unknown, out: unknown[]): void {
    this.opened = false;
    const frame = this.stack[this.stack.length - 1];
    if (!frame) {
      out.push(value);
      this.expect = Expect.Value;
    } else {
      if (frame.array) frame.array.push(value);
      else if (frame.key === '__proto__') Object.defineProperty(frame.object, frame.key, { value, enumerable: true, writable: true, configurable: true });
      else frame.object![frame.key] = value;
      this.expect = Expect.Next;
    }
  }

  private unexpected(chunk: string, i: number, wanted: string): JsonStreamError {
    return new JsonStreamError(`invalid JSON: ${JSON.stringify(chunk.slice(i, i + 20))} where ${wanted} was expected`);
  }
}

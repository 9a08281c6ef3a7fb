/**
 * Bounds on the shape of a JSON body, checked on the bytes as they arrive, before anything parses them.
 * JSON.parse is synchronous: a body of a million small objects holds the event loop for seconds while it
 * builds them, and a body nested ten thousand levels deep overflows the stack of any recursive walk after it
 * (the idempotency fingerprint, the validator). Nothing this API takes needs more than a few levels or a few
 * hundred values, so a body past these bounds is refused as soon as the offending byte arrives, at a cost
 * spread over the chunks (strings are skipped with indexOf, not byte by byte).
 */

/** How deep objects and arrays may nest. */
export const MAX_JSON_DEPTH = 64;
/** How many values (array elements and object members) a body may hold in all. */
export const MAX_JSON_VALUES = 100_000;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;
const COMMA = 0x2c;

/** Feed it a JSON text chunk by chunk; `push` answers why the body is refused, or null while it is fine. */
export class JsonShapeGuard {
  private depth = 0;
  private values = 0;
  private inString = false;
  private escaped = false;

  push(chunk: Buffer): string | null {
    let i = 0;
    const n = chunk.length;
    // Next quote and backslash at or after i in this chunk (-1: none left); searched again only once passed,
    // so a string of many escapes costs one pass, not one search to the chunk's end per escape.
    let quote = -2;
    let backslash = -2;
    while (i < n) {
      if (this.inString) {
        if (this.escaped) {
          this.escaped = false;
          i++;
          continue;
        }
        if (quote !== -1 && quote < i) quote = chunk.indexOf(QUOTE, i);
        if (backslash !== -1 && backslash < i) backslash = chunk.indexOf(BACKSLASH, i);
        if (backslash >= 0 && (quote < 0 || backslash < quote)) {
          this.escaped = true;
          i = backslash + 1;
        } else if (quote >= 0) {
          this.inString = false;
          i = quote + 1;
        } else {
          return null;
        }
        continue;
      }
      const c = chunk[i++];
      if (c === QUOTE) {
        this.inString = true;
      } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
        if (++this.depth > MAX_JSON_DEPTH) return `the JSON body nests deeper than ${MAX_JSON_DEPTH} levels`;
        if (++this.values > MAX_JSON_VALUES) return this.tooMany();
      } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
        this.depth--;
      } else if (c === COMMA) {
        if (++this.values > MAX_JSON_VALUES) return this.tooMany();
      }
    }
    return null;
  }

  private tooMany(): string {
    return `the JSON body holds more than ${MAX_JSON_VALUES} values; send files as files (multipart, a binary body or base64 content)`;
  }
}

import { describe, expect, it } from 'vitest';
import { FormDecoder } from '../../src/http/plugins/form-decoder.js';

/** What URLSearchParams makes of a body (the last of repeated names wins, as the bodies plugin keeps it). */
const reference = (body: string) => Object.fromEntries(new URLSearchParams(body));

function decode(body: string, chunkSize: number): Record<string, string> | string {
  const d = new FormDecoder(1000);
  const bytes = Buffer.from(body, 'utf8');
  for (let at = 0; at < bytes.length; at += chunkSize) {
    const refused = d.push(bytes.subarray(at, at + chunkSize));
    if (refused) return refused;
  }
  return d.finish();
}

describe('FormDecoder', () => {
  const bodies = [
    'a=1&b=2',
    'code=print(1)%0Aprint(2)',
    'x=a+b%2Bc',
    'a==b&c',
    '&&a=1&&',
    'bad=%zz%',
    'bad=%4',
    'end=%',
    'p=%%41',
    'u=%E2%82%AC%F0%9F%98%80',
    'raw=€😀',
    'k%3D=v%26',
    'a=1&a=2',
    '',
    '=v',
    'sp= %20+',
    'a=%&b=%2',
    'q=%e2%82',
    'n=%4g%41',
  ];
  it.each(bodies)('decodes %j as URLSearchParams does, whatever the chunks', (body) => {
    for (const size of [1, 2, 3, 7, 1000]) expect(decode(body, size), `chunks of ${size}`).toEqual(reference(body));
  });

  it('refuses more fields than allowed while they arrive', () => {
    expect(decode('a=1&'.repeat(1001), 64)).toMatch(/at most 1000 fields/);
  });
});

/**
 * A deliberately tiny, Python-shaped interpreter for the in-memory backend, so HTTP and contract tests can
 * exercise state, output, exceptions and last-expression values without a real sandbox. It understands,
 * one statement per line: `name = expr`, `print(expr, ...)`, `raise Name("message")`, and a bare `expr`
 * (integers, 'strings' or "strings", names, and `+` between them). Anything else is a SyntaxError.
 */
import type { CodeError, RichResult } from '../types.js';

type Value = number | string;

export interface MiniRun {
  stdout: string;
  results: RichResult[];
  error: CodeError | null;
}

class PyError extends Error {
  constructor(
    readonly pyName: string,
    message: string,
  ) {
    super(message);
  }
}

function evalExpr(src: string, ns: Map<string, Value>): Value {
  const parts = src.split('+').map((p) => p.trim());
  const values = parts.map((p) => evalAtom(p, ns));
  return values.reduce((a, b) => {
    if (typeof a !== typeof b) throw new PyError('TypeError', `unsupported operand type(s) for +: '${pyType(a)}' and '${pyType(b)}'`);
    return (a as never) + (b as never);
  });
}

function evalAtom(src: string, ns: Map<string, Value>): Value {
  if (/^-?\d+$/.test(src)) return Number(src);
  const str = /^(['"])(.*)\1$/.exec(src);
  if (str) return str[2];
  if (/^[A-Za-z_]\w*$/.test(src)) {
    if (!ns.has(src)) throw new PyError('NameError', `name '${src}' is not defined`);
    return ns.get(src)!;
  }
  throw new PyError('SyntaxError', `invalid syntax: ${src}`);
}

const pyType = (v: Value) => (typeof v === 'number' ? 'int' : 'str');
const pyRepr = (v: Value) => (typeof v === 'number' ? String(v) : `'${v}'`);
const pyStr = (v: Value) => String(v);

export function runMiniPython(code: string, ns: Map<string, Value>, cell: number): MiniRun {
  const lines = code.split('\n');
  let stdout = '';
  const results: RichResult[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '' || line.startsWith('#')) continue;
    try {
      let m: RegExpExecArray | null;
      if ((m = /^print\((.*)\)$/.exec(line))) {
        const args = m[1].trim() === '' ? [] : m[1].split(',').map((a) => pyStr(evalExpr(a.trim(), ns)));
        stdout += args.join(' ') + '\n';
      } else if ((m = /^raise\s+([A-Za-z_]\w*)\((?:(['"])(.*)\2)?\)$/.exec(line))) {
        throw new PyError(m[1], m[3] ?? '');
      } else if ((m = /^([A-Za-z_]\w*)\s*=(?!=)\s*(.+)$/.exec(line))) {
        ns.set(m[1], evalExpr(m[2], ns));
      } else {
        const value = evalExpr(line, ns);
        if (i === lines.length - 1 || lines.slice(i + 1).every((l) => l.trim() === '')) {
          results.push({ type: 'execute_result', data: { 'text/plain': pyRepr(value) } });
        }
      }
    } catch (err) {
      if (!(err instanceof PyError)) throw err;
      const traceback =
        `Traceback (most recent call last):\n  File "<cell-${cell}>", line ${i + 1}, in <module>\n    ${line}\n` +
        `${err.pyName}: ${err.message}\n`;
      return { stdout, results, error: { name: err.pyName, value: err.message, traceback } };
    }
  }
  return { stdout, results, error: null };
}

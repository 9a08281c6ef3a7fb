// The JavaScript kernel (Node): keeps globals and top-level let/const/function declarations between calls,
// like Node's REPL. Same protocol as the Python kernel: one JSON request per line on the fd in argv[2], one
// JSON reply per line on the fd in argv[3]; console output goes to fd 1/2, which the supervisor captures.
// The value of the code's last expression comes back as a result (a promise is awaited first).
import fs from 'node:fs';
import readline from 'node:readline';
import vm from 'node:vm';
import util from 'node:util';
import { createRequire } from 'node:module';

const [requestFd, replyFd] = process.argv.slice(2).map(Number);
const workspace = process.env.CIW_WORKSPACE || '/workspace';
const kernelFile = new URL(import.meta.url).pathname;
process.chdir(workspace);
globalThis.require = createRequire(`${workspace}/`);

let interrupt = null; // rejects the awaited promise of the running call on SIGINT
process.on('SIGINT', () => interrupt?.(new Error('Script execution interrupted.')));

function reply(obj) {
  fs.writeSync(replyFd, `${JSON.stringify(obj)}\n`);
}

function errorOf(err) {
  if (!(err instanceof Error)) return { name: 'Error', value: `Uncaught ${util.inspect(err)}`, traceback: `Uncaught ${util.inspect(err)}\n` };
  const stack = String(err.stack ?? `${err.name}: ${err.message}`)
    .split('\n')
    .filter((line) => !line.includes(kernelFile) && !/\(node:/.test(line) && !/^\s+at node:/.test(line))
    .join('\n');
  return { name: err.name, value: err.message, traceback: `${stack}\n` };
}

// Names the cells declared at top level (let, const, var, function, class) or put on globalThis: the state a
// pause saves. Top-level let/const live in the script scope, not on globalThis, so the cells' source is read.
const builtins = new Set(Object.getOwnPropertyNames(globalThis));
const declared = new Map(); // name -> 'let' | 'const' | 'var' | 'function' | 'class'
const DECLARATION = /(?:^|[;{}\n])\s*(let|const|var|function\*?|async\s+function\*?|class)\s+([A-Za-z_$][\w$]*)/g;

function noteDeclarations(code) {
  for (const m of code.matchAll(DECLARATION)) declared.set(m[2], m[1].includes('function') ? 'function' : m[1]);
}

/** Saves the JSON-able values of the cells' names to `path`; lists the others with the reason. */
function saveState(path) {
  const names = new Set([...declared.keys(), ...Object.getOwnPropertyNames(globalThis).filter((n) => !builtins.has(n))]);
  const values = {};
  const skipped = [];
  for (const name of names) {
    if (name === '_' || name === 'require') continue;
    let value;
    try {
      value = vm.runInThisContext(name);
    } catch {
      continue; // declared in a cell that failed before the declaration ran
    }
    const kind = declared.get(name) ?? 'global';
    if (typeof value === 'function') {
      skipped.push({ name, reason: 'a function: JavaScript functions are not saved (define it again after the resume)' });
      continue;
    }
    try {
      const json = JSON.stringify(value);
      if (json === undefined) throw new Error(`${typeof value} cannot be written as JSON`);
      if (JSON.stringify(JSON.parse(json)) !== json) throw new Error('does not survive JSON unchanged');
      values[name] = { kind, json };
    } catch (err) {
      skipped.push({ name, reason: `not JSON: ${err.message}` });
    }
  }
  fs.writeFileSync(path, JSON.stringify({ values, skipped }));
  return { saved: Object.keys(values).sort(), skipped };
}

/** Loads what saveState() wrote: each name declared again with its kind (const stays const). */
function loadState(path) {
  const { values, skipped } = JSON.parse(fs.readFileSync(path, 'utf8'));
  const restored = [];
  for (const [name, { kind, json }] of Object.entries(values)) {
    if (!/^[A-Za-z_$][\w$]*$/.test(name)) continue;
    globalThis.__ciwValue = JSON.parse(json);
    try {
      if (kind === 'let' || kind === 'const' || kind === 'var') {
        vm.runInThisContext(`${kind} ${name} = globalThis.__ciwValue;`);
        declared.set(name, kind);
      } else {
        globalThis[name] = globalThis.__ciwValue;
      }
      restored.push(name);
    } catch (err) {
      skipped.push({ name, reason: `could not be declared again: ${err.message}` });
    } finally {
      delete globalThis.__ciwValue;
    }
  }
  return { restored: restored.sort(), skipped };
}

async function run(code, cell) {
  noteDeclarations(code);
  const results = [];
  let error = null;
  try {
    let value = vm.runInThisContext(code, { filename: `<cell-${cell}>`, breakOnSigint: true });
    if (value && typeof value.then === 'function') {
      value = await new Promise((resolve, reject) => {
        interrupt = reject;
        value.then(resolve, reject);
      });
    }
    if (value !== undefined) {
      globalThis._ = value;
      results.push({ type: 'execute_result', data: { 'text/plain': util.inspect(value, { depth: 4, maxArrayLength: 200 }) } });
    }
  } catch (err) {
    error = errorOf(err);
  } finally {
    interrupt = null;
  }
  return { results, error };
}

const lines = readline.createInterface({ input: fs.createReadStream('', { fd: requestFd }) });
reply({ ready: true });
let cell = 0;
for await (const line of lines) {
  const request = JSON.parse(line);
  if (request.state) {
    try {
      reply({ state: request.state === 'save' ? saveState(request.path) : loadState(request.path) });
    } catch (err) {
      reply({ state: { error: `${err.name}: ${err.message}` } });
    }
    continue;
  }
  const saved = {};
  for (const [k, v] of Object.entries(request.env || {})) {
    saved[k] = process.env[k];
    process.env[k] = String(v);
  }
  try {
    reply({ ...(await run(String(request.code), ++cell)), execution_count: cell });
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

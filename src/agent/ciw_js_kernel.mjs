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

async function run(code, cell) {
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
  reply(await run(String(request.code), ++cell));
}

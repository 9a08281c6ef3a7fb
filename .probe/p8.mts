import { startTestApp } from '../test/helpers/app.js';
import { localEnv } from '../test/helpers/local.js';
const t = await startTestApp(localEnv({}));
const id = (await t.post('/create_sandbox', { env: { PYTHONPATH: '/workspace/.evil', LD_PRELOAD: '/workspace/evil.so' } })).body.sandbox_id;
const inAgent = `'agent.py' in open('/proc/self/cmdline').read()`;
const cmds = [
      'mkdir -p .evil .local/lib/python3.$(python3 -c "import sys; print(sys.version_info[1])")/site-packages',
      `printf '%s\\n' "if ${inAgent}: open('/workspace/marker-ctypes', 'w')" 'from ctypes_real import *' > .evil/ctypes.py`,
      `echo "import os; ${inAgent} and open('/workspace/marker-pth', 'w')" > .local/lib/python3.*/site-packages/evil.pth`,
      'printf \'%s\\n\' \'#include <stdio.h>\' \'#include <string.h>\' \'__attribute__((constructor)) static void f(void) {\' '
        + '\'  char c[4096] = {0}; FILE *p = fopen("/proc/self/cmdline", "r"); size_t n = p ? fread(c, 1, sizeof c - 1, p) : 0;\' '
        + '\'  for (size_t i = 0; i < n; i++) if (!c[i]) c[i] = 32;\' '
        + '\'  if (strstr(c, "agent.py")) fclose(fopen("/workspace/marker-preload", "w")); }\' > evil.c',
      'LD_PRELOAD= gcc -shared -fPIC -o evil.so evil.c',
      'echo "import sys; VALUE = 42" > .evil/usermod.py',
];
for (const c of cmds) { const r = (await t.post('/execute_command', { sandbox_id: id, command: c })).body; console.log(r.exit_code, r.output.slice(0, 300)); }
await t.close();

// A script written for E2B's cloud, unchanged. Point it at this service with three variables:
//   E2B_API_URL=http://localhost:8000 E2B_SANDBOX_URL=http://localhost:8000 E2B_API_KEY=e2b_<your key> node quickstart.mjs
import { Sandbox } from '@e2b/code-interpreter';

const sbx = await Sandbox.create();
try {
  await sbx.runCode('import pandas as pd\nrows = [1, 2, 3]');
  const sum = await sbx.runCode('sum(rows) * 2');
  console.log('state kept:', sum.text);

  const chart = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot(rows, [4, 1, 9])\nplt.title("demo")\nplt.show()');
  console.log('chart png bytes:', Buffer.from(chart.results.find((r) => r.png).png, 'base64').length > 1000);

  await sbx.files.write('/home/user/data.csv', 'a,b\n1,2\n3,4\n');
  const frame = await sbx.runCode('df = pd.read_csv("/home/user/data.csv")\ndf.to_csv("/home/user/out.csv", index=False)\nlen(df)');
  console.log('rows read:', frame.text);
  console.log('file out:', JSON.stringify(await sbx.files.read('/home/user/out.csv')));

  const ls = await sbx.commands.run('ls /home/user');
  console.log('shell:', ls.stdout.trim().split('\n').join(' '));

  const server = await sbx.commands.run('python3 -m http.server 8080', { background: true });
  let page = '';
  for (let i = 0; i < 50 && !page.includes('data.csv'); i++) {
    page = (await sbx.commands.run('python3 -c "import urllib.request as u; print(u.urlopen(\'http://127.0.0.1:8080\').read().decode())" || true')).stdout;
  }
  console.log('background server answered:', page.includes('data.csv'));
  await server.kill();
} finally {
  await sbx.kill();
}
console.log('killed');

import { expect, test } from '@jupyterlab/galata';
import { ChildProcess, spawn } from 'child_process';
import * as path from 'path';

import {
  ask,
  lastAnswer,
  loadExtensionFromSidebar,
  logBrowserErrors,
  openNotebook,
  openSidebar,
  statusText,
  TEST_SETTINGS,
  waitForAnswer
} from './helpers';

/**
 * The sidebar on the remote backend: a real `transformers serve` (the embedded model, continuous
 * batching, 127.0.0.1) started here; only the notebook's load line differs from the other tests.
 * A CPU server is slow, so the answer is a few tokens.
 */
const root = path.resolve(__dirname, '..', '..', '..');
const venv = process.env.VENV || path.join(root, '.venv');

let server: ChildProcess | undefined;
let served: { url: string; model: string };

function startServer(): Promise<{ url: string; model: string }> {
  server = spawn(
    path.join(venv, 'bin', 'python'),
    ['-m', 'jupyter_codellama.testing.serve'],
    {
      cwd: root,
      env: {
        ...process.env,
        JUPYTER_CODELLAMA_CACHE:
          process.env.JUPYTER_CODELLAMA_CACHE ||
          path.join(root, '.cache', 'jupyter_codellama')
      },
      stdio: ['pipe', 'pipe', 'inherit']
    }
  );
  return new Promise((resolve, reject) => {
    let out = '';
    server!.stdout!.on('data', chunk => {
      out += chunk;
      if (out.includes('\n')) {
        resolve(JSON.parse(out.split('\n')[0]));
      }
    });
    server!.on('exit', code =>
      reject(new Error(`transformers serve exited (${code})`))
    );
  });
}

test.use({
  autoGoto: true,
  mockSettings: {
    ...TEST_SETTINGS,
    'jupyter-codellama:chat': { temperature: 0, maxNewTokens: 4 }
  }
});
test.beforeEach(({ page }) => logBrowserErrors(page));

test.beforeAll(async () => {
  test.setTimeout(180000);
  served = await startServer();
});

test.afterAll(() => {
  server?.stdin?.end();
  server?.kill();
});

test('the sidebar answers through a remote server: only the load line changes', async ({
  page
}) => {
  test.setTimeout(300000);
  await openNotebook(page, 'remote.ipynb');
  const sidebar = await openSidebar(page);
  await loadExtensionFromSidebar(sidebar);

  await page.notebook.setCell(
    0,
    'code',
    `%codellama load --endpoint ${served.url} ${served.model}`
  );
  await page.notebook.runCell(0);
  const host = served.url.replace(/\/v1$/, '');
  await expect(statusText(sidebar)).toContainText(host, { timeout: 60000 });

  await ask(sidebar, 'Say hello.');
  expect(await waitForAnswer(sidebar, 240000)).toBe('done');
  await expect(
    lastAnswer(sidebar).locator('.jp-CodeLlama-answer')
  ).not.toBeEmpty();
});

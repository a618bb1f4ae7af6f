import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Locator } from '@playwright/test';

import {
  ask,
  lastAnswer,
  loadExtensionFromSidebar,
  logBrowserErrors,
  openNotebook,
  openSidebar,
  restartKernel,
  statusText,
  TEST_SETTINGS,
  waitForAnswer
} from './helpers';

test.use({ autoGoto: true, mockSettings: TEST_SETTINGS });
test.beforeEach(({ page }) => logBrowserErrors(page));

test('load the extension from the sidebar, ask, see streamed text, insert the code below', async ({
  page
}) => {
  await openNotebook(page, 'chat.ipynb');
  await page.notebook.setCell(0, 'code', 'import math');
  const sidebar = await openSidebar(page);
  await loadExtensionFromSidebar(sidebar);
  await expect(statusText(sidebar)).toHaveText('Model not loaded');

  await ask(
    sidebar,
    'Write a Python function that adds two numbers. Answer with one code block.'
  );
  const answer = lastAnswer(sidebar);
  // Streamed: text shows up while the answer is still being generated.
  await expect(answer).toHaveAttribute('data-state', 'streaming');
  await expect(answer.locator('.jp-CodeLlama-answer')).not.toBeEmpty({
    timeout: 90000
  });
  expect(await waitForAnswer(sidebar)).toBe('done');
  // The first question loaded the default model (the embedded one on a CPU).
  await expect(statusText(sidebar)).toContainText('embedded');

  const code = (await answer.locator('pre').first().textContent())!.replace(
    /\n$/,
    ''
  );
  expect(code).toContain('def ');
  await answer.getByRole('button', { name: 'Insert below' }).first().click();
  expect(await page.notebook.getCellCount()).toBe(2);
  expect(await page.notebook.getCellTextInput(1)).toBe(code);
});

/** Open `notebook`, load the extension, ask for a long answer and wait until it streams. */
async function startLongAnswer(
  page: IJupyterLabPageFixture,
  notebook: string
): Promise<{ sidebar: Locator; first: Locator }> {
  await openNotebook(page, notebook);
  const sidebar = await openSidebar(page);
  await loadExtensionFromSidebar(sidebar);
  await ask(
    sidebar,
    'Write a long essay about the history of the Python language.'
  );
  const first = lastAnswer(sidebar);
  await expect(first.locator('.jp-CodeLlama-answer')).not.toBeEmpty({
    timeout: 90000
  });
  return { sidebar, first };
}

test.describe('restart', () => {
  // Galata's kernels mock answers JupyterLab's restart POST with 201 (a creation), which
  // JupyterLab rejects: talk to the real server API here.
  test.use({ kernels: null });

  test('stop an answer midway, restart the kernel, and keep chatting', async ({
    page
  }) => {
    const { sidebar, first } = await startLongAnswer(page, 'restart.ipynb');
    await sidebar.getByRole('button', { name: 'Stop' }).click();
    expect(await waitForAnswer(sidebar, 15000)).toBe('cancelled');
    await expect(first).toContainText('Stopped.');
    await expect(sidebar.getByRole('button', { name: 'Send' })).toBeVisible();

    await restartKernel(page);
    // The new kernel gets %load_ext again by itself; its engine starts empty.
    await expect(sidebar.locator('.jp-CodeLlama-chat')).toHaveAttribute(
      'data-link-state',
      'ready',
      {
        timeout: 60000
      }
    );
    await expect(statusText(sidebar)).toHaveText('Model not loaded');
    await ask(sidebar, 'What is 2 + 2? Answer in one short sentence.');
    expect(await waitForAnswer(sidebar)).toBe('done');
    await expect(
      lastAnswer(sidebar).locator('.jp-CodeLlama-answer')
    ).not.toBeEmpty();
    // The conversation survived the restart.
    await expect(
      sidebar.locator('.jp-CodeLlama-message.jp-mod-user')
    ).toHaveCount(2);
  });
});

test.describe('restart mid-answer', () => {
  test.use({
    kernels: null,
    // Long enough that the answer is still streaming when the kernel restarts.
    mockSettings: {
      ...TEST_SETTINGS,
      'jupyter-codellama:chat': { temperature: 0, maxNewTokens: 2000 }
    }
  });

  test('restart the kernel while an answer streams: it ends with a message, no spinner stays', async ({
    page
  }) => {
    const { sidebar, first } = await startLongAnswer(page, 'restart-mid.ipynb');
    await expect(first).toHaveAttribute('data-state', 'streaming');

    await restartKernel(page);
    expect(await waitForAnswer(sidebar, 30000)).toBe('error');
    await expect(first.locator('[role="alert"]')).toContainText('restarted');
    await expect(sidebar.locator('[data-state="streaming"]')).toHaveCount(0);
    await expect(sidebar.locator('.jp-CodeLlama-thinking')).toHaveCount(0);
    await expect(sidebar.locator('.jp-CodeLlama-chat')).toHaveAttribute(
      'data-link-state',
      'ready',
      {
        timeout: 60000
      }
    );
    await ask(sidebar, 'What is 2 + 2? Answer in one short sentence.');
    expect(await waitForAnswer(sidebar)).toBe('done');
    await expect(
      lastAnswer(sidebar).locator('.jp-CodeLlama-answer')
    ).not.toBeEmpty();
  });
});

test.describe('subshell', () => {
  // A short answer, so that it fits well inside the running cell even on a loaded machine.
  test.use({
    mockSettings: {
      ...TEST_SETTINGS,
      'jupyter-codellama:chat': { temperature: 0, maxNewTokens: 24 }
    }
  });

  test('answers while a long cell runs (comms over a kernel subshell)', async ({
    page
  }) => {
    await openNotebook(page, 'sleep.ipynb');
    const sidebar = await openSidebar(page);
    await loadExtensionFromSidebar(sidebar);
    // Load the model first, so that the answer below does not wait for imports.
    await sidebar.getByRole('button', { name: 'Load', exact: true }).click();
    await expect(statusText(sidebar)).toContainText('embedded', {
      timeout: 90000
    });

    await page.notebook.setCell(
      0,
      'code',
      'import time\ntime.sleep(30)\nprint("slept")'
    );
    const cell = page.locator('.jp-Notebook .jp-Cell').first();
    await page.notebook.runCell(0, { wait: false });
    await expect(cell.locator('.jp-InputPrompt')).toHaveText('[*]:');
    const started = Date.now();

    await ask(sidebar, 'Say hello in one short sentence.');
    // The answer streams in while the cell is still running: the chat does not wait for it.
    await expect(
      lastAnswer(sidebar).locator('.jp-CodeLlama-answer')
    ).not.toBeEmpty({ timeout: 28000 });
    expect(Date.now() - started).toBeLessThan(30000);
    expect(await cell.locator('.jp-OutputArea').textContent()).not.toContain(
      'slept'
    );
    expect(await waitForAnswer(sidebar)).toBe('done');
    await expect(cell.locator('.jp-OutputArea')).toContainText('slept', {
      timeout: 40000
    });
  });
});

import { expect, galata, IJupyterLabPageFixture } from '@jupyterlab/galata';
import type { Locator } from '@playwright/test';
import * as path from 'path';

export const SIDEBAR = '#jupyter-codellama-chat';

/** Greedy and short answers: deterministic, and quick with the embedded model on 2 cores. */
export const TEST_SETTINGS = {
  ...galata.DEFAULT_SETTINGS,
  'jupyter-codellama:chat': { temperature: 0, maxNewTokens: 120 }
};

/** Where the UI tests put the README's screenshot `name`. */
export function screenshotPath(name: string): string {
  return path.resolve(__dirname, '..', '..', '..', 'docs', 'screenshots', name);
}

/** Print the browser's errors in the test log. */
export function logBrowserErrors(page: IJupyterLabPageFixture): void {
  page.on('console', message => {
    if (message.type() === 'error') {
      console.log('[browser]', message.text());
    }
  });
}

/** A new notebook whose kernel is idle (Shift+Enter is dropped while the kernel starts). */
export async function openNotebook(
  page: IJupyterLabPageFixture,
  name: string
): Promise<void> {
  await page.notebook.createNew(name);
  await page.waitForSelector('#jp-main-statusbar >> text=Idle', {
    timeout: 60000
  });
}

/** Show the chat sidebar and return it. */
export async function openSidebar(
  page: IJupyterLabPageFixture
): Promise<Locator> {
  await page.evaluate(() =>
    (window as any).jupyterapp.commands.execute('codellama:open-chat')
  );
  const sidebar = page.locator(SIDEBAR);
  await expect(sidebar).toBeVisible();
  return sidebar;
}

/** From a fresh kernel: click the sidebar's button that runs %load_ext, wait for the link. */
export async function loadExtensionFromSidebar(
  sidebar: Locator
): Promise<void> {
  const button = sidebar.getByRole('button', {
    name: 'Load jupyter-codellama in the kernel'
  });
  await expect(button).toBeVisible({ timeout: 30000 });
  await button.click();
  await expect(sidebar.locator('.jp-CodeLlama-chat')).toHaveAttribute(
    'data-link-state',
    'ready',
    {
      timeout: 60000
    }
  );
}

/** Type a question and send it with Enter. */
export async function ask(sidebar: Locator, question: string): Promise<void> {
  const input = sidebar.getByRole('textbox', { name: 'Ask Code Llama' });
  await input.fill(question);
  await input.press('Enter');
}

export function lastAnswer(sidebar: Locator): Locator {
  return sidebar.locator('.jp-CodeLlama-message.jp-mod-assistant').last();
}

/** Wait until the last answer is no longer streaming; returns its final state. */
export async function waitForAnswer(
  sidebar: Locator,
  timeout = 120000
): Promise<string> {
  const answer = lastAnswer(sidebar);
  await expect(answer).not.toHaveAttribute('data-state', 'streaming', {
    timeout
  });
  return (await answer.getAttribute('data-state')) ?? '';
}

export function statusText(sidebar: Locator): Locator {
  return sidebar.locator('.jp-CodeLlama-statusText');
}

/** Restart the notebook's kernel through JupyterLab's own command and dialog. */
export async function restartKernel(
  page: IJupyterLabPageFixture
): Promise<void> {
  void page.evaluate(() =>
    (window as any).jupyterapp.commands.execute('notebook:restart-kernel')
  );
  await page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-accept').click();
  await page.waitForSelector('#jp-main-statusbar >> text=Idle', {
    timeout: 60000
  });
}

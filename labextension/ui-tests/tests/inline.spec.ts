import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Locator } from '@playwright/test';

import {
  loadExtensionFromSidebar,
  logBrowserErrors,
  openNotebook,
  openSidebar,
  statusText,
  TEST_SETTINGS
} from './helpers';

test.use({ autoGoto: true, mockSettings: TEST_SETTINGS });
test.beforeEach(({ page }) => logBrowserErrors(page));

/** Ghost text shown by the Code Llama provider. */
function ghost(page: IJupyterLabPageFixture): Locator {
  return page.locator('.jp-GhostText[data-provided-by="jupyter-codellama:inline"]');
}

/** The ghost text once it has stopped streaming (the streaming indicator is gone). */
async function settledGhost(page: IJupyterLabPageFixture): Promise<string> {
  await expect(ghost(page)).toHaveText(/\S/, { timeout: 60000 });
  await expect(page.locator('.jp-GhostText-streamingIndicator')).toHaveCount(0, { timeout: 60000 });
  // Line breaks are <br> elements: textContent has the suggestion without them.
  return (await ghost(page).textContent()) ?? '';
}

/** Load the extension in the kernel and the default (embedded) model from the sidebar. */
async function loadModel(page: IJupyterLabPageFixture): Promise<void> {
  const sidebar = await openSidebar(page);
  await loadExtensionFromSidebar(sidebar);
  await sidebar.getByRole('button', { name: 'Load', exact: true }).click();
  await expect(statusText(sidebar)).toContainText('embedded', { timeout: 120000 });
}

/** The source of cell `index`, read from the model (Galata's getter leaves edit mode). */
async function cellSource(page: IJupyterLabPageFixture, index: number): Promise<string> {
  return page.evaluate(
    i => (window as any).jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel.getSource(),
    index
  );
}

/** Put the cursor at the end of cell `index` and type `text` at a person's pace. */
async function typeInCell(page: IJupyterLabPageFixture, index: number, text: string): Promise<void> {
  await page.notebook.enterCellEditingMode(index);
  await page.keyboard.press('Control+End');
  await page.keyboard.type(text, { delay: 60 });
}

test('typing in a code cell shows ghost text, Tab accepts it, typing through keeps it', async ({
  page
}) => {
  await openNotebook(page, 'inline.ipynb');
  await page.notebook.setCell(0, 'code', 'import math\n\n\ndef circle_area(radius):\nreturn math.pi * radius ** 2');
  await loadModel(page);

  // A second cell, typed into: the suggestion appears as ghost text by itself.
  await page.notebook.addCell('code', '');
  await typeInCell(page, 1, 'area = circle_');
  const shown = await settledGhost(page);
  expect(shown.trim().length).toBeGreaterThan(0);
  // Ghost text is not in the cell until accepted.
  expect(await cellSource(page, 1)).toBe('area = circle_');

  // Typing the first character of the suggestion keeps the rest of it on screen.
  const first = shown[0];
  if (shown.length > 1) {
    await page.keyboard.type(first);
    await expect(ghost(page)).toHaveText(shown.slice(1));
  }

  // Tab accepts what is shown.
  await page.keyboard.press('Tab');
  await expect(ghost(page)).toHaveCount(0);
  expect(await cellSource(page, 1)).toBe('area = circle_' + shown);

  // The sidebar shows the recent latency of inline completions.
  const sidebar = page.locator('#jupyter-codellama-chat');
  await expect(sidebar.locator('.jp-CodeLlama-latency')).toContainText('ms median');
});

test('a markdown cell gets no suggestions; in a code cell, a new line after a comment does', async ({
  page
}) => {
  await openNotebook(page, 'inline-markdown.ipynb');
  await page.notebook.setCell(0, 'markdown', '');
  await loadModel(page);

  await typeInCell(page, 0, 'The circle area function returns the area of');
  // Long enough for a suggestion to come back several times over (see the code cell below).
  await page.waitForTimeout(4000);
  await expect(page.locator('.jp-GhostText')).toHaveCount(0);
  expect(await cellSource(page, 0)).toBe('The circle area function returns the area of');

  // JupyterLab does not trigger on a blank line by itself; after a comment, we do.
  await page.notebook.addCell('code', '');
  await typeInCell(page, 1, 'import math\n# print the area of a circle of radius 2\n');
  const suggestion = await settledGhost(page);
  expect(suggestion.trim().length).toBeGreaterThan(0);
  await page.keyboard.press('Tab');
  const typed = 'import math\n# print the area of a circle of radius 2\n';
  const source = await cellSource(page, 1);
  expect(source.startsWith(typed)).toBe(true);
  expect(source.slice(typed.length).replace(/\n/g, '')).toBe(suggestion);
});

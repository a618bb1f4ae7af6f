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
  return page.locator(
    '.jp-GhostText[data-provided-by="jupyter-codellama:inline"]'
  );
}

/** The ghost text once it has stopped streaming (the streaming indicator is gone). */
async function settledGhost(page: IJupyterLabPageFixture): Promise<string> {
  await expect(ghost(page)).toHaveText(/\S/, { timeout: 60000 });
  await expect(page.locator('.jp-GhostText-streamingIndicator')).toHaveCount(
    0,
    { timeout: 60000 }
  );
  // Line breaks are <br> elements: textContent has the suggestion without them.
  return (await ghost(page).textContent()) ?? '';
}

/** Load the extension in the kernel and the default (embedded) model from the sidebar. */
async function loadModel(page: IJupyterLabPageFixture): Promise<void> {
  const sidebar = await openSidebar(page);
  await loadExtensionFromSidebar(sidebar);
  await sidebar.getByRole('button', { name: 'Load', exact: true }).click();
  await expect(statusText(sidebar)).toContainText('embedded', {
    timeout: 120000
  });
}

/** The source of cell `index`, read from the model (Galata's getter leaves edit mode). */
async function cellSource(
  page: IJupyterLabPageFixture,
  index: number
): Promise<string> {
  return page.evaluate(
    i =>
      (window as any).jupyterapp.shell.currentWidget.content.widgets[
        i
      ].model.sharedModel.getSource(),
    index
  );
}

/** Put the cursor at the end of cell `index` and type `text` at a person's pace. */
async function typeInCell(
  page: IJupyterLabPageFixture,
  index: number,
  text: string
): Promise<void> {
  await page.notebook.enterCellEditingMode(index);
  await page.keyboard.press('Control+End');
  await page.keyboard.type(text, { delay: 60 });
}

/** A notebook whose first cell defines circle_area, the model loaded, and an empty second cell. */
async function circleNotebook(
  page: IJupyterLabPageFixture,
  name: string
): Promise<void> {
  await openNotebook(page, name);
  await page.notebook.setCell(
    0,
    'code',
    'import math\n\n\ndef circle_area(radius):\nreturn math.pi * radius ** 2'
  );
  await loadModel(page);
  await page.notebook.addCell('code', '');
}

test('typing in a code cell shows ghost text, Tab accepts it, typing through keeps it', async ({
  page
}) => {
  await circleNotebook(page, 'inline.ipynb');

  // The second cell, typed into: the suggestion appears as ghost text by itself.
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
  await expect(sidebar.locator('.jp-CodeLlama-latency')).toContainText(
    'ms median'
  );
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
  expect(await cellSource(page, 0)).toBe(
    'The circle area function returns the area of'
  );

  // JupyterLab does not trigger on a blank line by itself; after a comment, we do.
  await page.notebook.addCell('code', '');
  await typeInCell(
    page,
    1,
    'import math\n# print the area of a circle of radius 2\n'
  );
  const suggestion = await settledGhost(page);
  expect(suggestion.trim().length).toBeGreaterThan(0);
  await page.keyboard.press('Tab');
  const typed = 'import math\n# print the area of a circle of radius 2\n';
  const source = await cellSource(page, 1);
  expect(source.startsWith(typed)).toBe(true);
  expect(source.slice(typed.length).replace(/\n/g, '')).toBe(suggestion);
});

/** The ghost text as shown, line breaks included (they are <br> elements). */
async function ghostText(page: IJupyterLabPageFixture): Promise<string> {
  return (await ghost(page).count()) ? ghost(page).innerText() : '';
}

/** VS Code's "next word": the punctuation and spaces before a run of word characters, and the run. */
const NEXT_WORD = /^[^\p{L}\p{N}_]*[\p{L}\p{N}_]+/u;

test('accept-word and accept-line insert exactly the next word and the next line of the ghost text', async ({
  page
}) => {
  const sent = recordSent(page);
  await circleNotebook(page, 'inline-parts.ipynb');
  // A comment, then a new line: a suggestion of several lines (greedy, so always the same).
  const typed =
    '# compute the area and the circumference of a circle of radius 2\n';
  await typeInCell(page, 1, typed);
  await settledGhost(page);
  const shown = await ghostText(page);
  const word = NEXT_WORD.exec(shown)?.[0] ?? '';
  expect(word.length).toBeGreaterThan(0);
  expect(shown.slice(word.length)).toContain('\n'); // a line to accept after the word

  // Ctrl+Right: the next word goes in, the rest stays shown.
  await page.keyboard.press('Control+ArrowRight');
  await expect.poll(() => cellSource(page, 1)).toBe(typed + word);
  const rest = shown.slice(word.length);
  await expect.poll(() => ghostText(page)).toBe(rest);

  // Ctrl+Down: the rest of that line, its line break included; what follows stays shown.
  const line = rest.slice(0, rest.indexOf('\n') + 1);
  await page.keyboard.press('Control+ArrowDown');
  await expect.poll(() => cellSource(page, 1)).toBe(typed + word + line);
  const left = rest.slice(line.length);
  expect(left.trim()).not.toBe('');
  await expect.poll(() => ghostText(page)).toBe(left);

  // Tab takes what is left: the cell holds exactly the suggestion that was first shown, and the
  // continuation is asked for in the background at once.
  const prefetches = () =>
    sent.filter(frame => frame.includes('"prefetch":true')).length;
  expect(prefetches()).toBe(0); // accepting in parts left some of the suggestion each time
  await page.keyboard.press('Tab');
  await expect.poll(() => cellSource(page, 1)).toBe(typed + shown);
  await expect.poll(prefetches).toBe(1);
});

/** What the page sends over the websockets it opens from now on (the kernel's among them). */
function recordSent(page: IJupyterLabPageFixture): string[] {
  const frames: string[] = [];
  page.on('websocket', socket =>
    socket.on('framesent', frame => frames.push(String(frame.payload)))
  );
  return frames;
}

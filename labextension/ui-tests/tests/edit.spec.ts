import { expect, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { Locator } from '@playwright/test';

import {
  logBrowserErrors,
  openNotebook,
  screenshotPath,
  TEST_SETTINGS
} from './helpers';

const CELL = 'def area(r):\n    return 3.14 * r * r\n\nprint(area(2))';
const BOX = '.jp-CodeLlama-edit';

test.use({
  autoGoto: true,
  mockSettings: TEST_SETTINGS,
  viewport: { width: 1280, height: 800 }
});
test.beforeEach(({ page }) => logBrowserErrors(page));

/** The first cell's source and execution count, from its model. */
async function firstCell(
  page: IJupyterLabPageFixture
): Promise<{ source: string; count: number | null }> {
  return page.evaluate(() => {
    const cell = (window as any).jupyterapp.shell.currentWidget.content
      .widgets[0].model;
    return { source: cell.sharedModel.getSource(), count: cell.executionCount };
  });
}

/** Record whether a diff line other than context ever shows while the proposal streams. */
async function watchForStreamedDiff(
  page: IJupyterLabPageFixture
): Promise<void> {
  await page.evaluate(() => {
    const seen = () =>
      document.querySelector(
        '.jp-CodeLlama-edit[data-state="streaming"] .jp-CodeLlama-diffLine:not(.jp-mod-same)'
      );
    (window as any).sawStreamedDiff = false;
    new MutationObserver((_, observer) => {
      if (seen()) {
        (window as any).sawStreamedDiff = true;
        observer.disconnect();
      }
    }).observe(document.body, {
      subtree: true,
      childList: true,
      attributes: true
    });
  });
}

/** Type the instruction in the edit box, send it, and wait for the kernel's final proposal. */
async function ask(box: Locator, instruction: string): Promise<void> {
  await box
    .getByRole('textbox', { name: 'Edit instruction' })
    .fill(instruction);
  await box.getByRole('textbox', { name: 'Edit instruction' }).press('Enter');
  await expect(box).toHaveAttribute('data-state', 'ready', { timeout: 180000 });
}

/** The proposal as the diff shows it: its lines that are not removed. */
async function proposal(box: Locator): Promise<string> {
  const lines = await box
    .locator(
      '.jp-CodeLlama-diffLine:not(.jp-mod-removed) .jp-CodeLlama-diffText'
    )
    .allTextContents();
  return lines.join('\n');
}

test('an edit streams a diff; Reject changes nothing, Accept is one undo step, the cell never runs', async ({
  page
}) => {
  test.setTimeout(420000);
  await openNotebook(page, 'edit.ipynb');
  // Set, not typed: the editor would indent the last line.
  await page.evaluate(source => {
    (
      window as any
    ).jupyterapp.shell.currentWidget.content.widgets[0].model.sharedModel.setSource(
      source
    );
  }, CELL);
  expect(await firstCell(page)).toEqual({ source: CELL, count: null });

  // The shortcut, on the active cell in command mode (the extension loads itself in the kernel).
  await page.notebook.selectCells(0);
  await page.keyboard.press('Alt+Shift+I');
  const box = page.locator(BOX);
  await expect(box).toBeVisible();
  await expect(
    box.getByRole('textbox', { name: 'Edit instruction' })
  ).toBeFocused();
  await watchForStreamedDiff(page);
  await ask(box, 'use r ** 2 instead of r * r');
  expect(await page.evaluate(() => (window as any).sawStreamedDiff)).toBe(true);
  await expect(
    box.locator('.jp-CodeLlama-diffLine.jp-mod-added').first()
  ).toBeVisible();
  expect((await firstCell(page)).source).toBe(CELL); // nothing changes before Accept

  await page.mouse.move(0, 0);
  await page
    .locator('.jp-Cell')
    .first()
    .screenshot({ path: screenshotPath('edit-light.png') });
  await page.theme.setDarkTheme();
  await page.mouse.move(0, 0);
  await page
    .locator('.jp-Cell')
    .first()
    .screenshot({ path: screenshotPath('edit-dark.png') });
  await page.theme.setLightTheme();

  // Escape rejects: the cell is byte for byte as it was, and did not run.
  await box.getByRole('textbox', { name: 'Edit instruction' }).press('Escape');
  await expect(box).toHaveCount(0);
  expect(await firstCell(page)).toEqual({ source: CELL, count: null });

  // Once it has run, from the cell's context menu; Accept.
  await page.notebook.runCell(0);
  await expect(page.locator('.jp-OutputArea-output')).toHaveText('12.56');
  await page.notebook.selectCells(0); // running it made the next cell active
  await page
    .locator('.jp-Cell .jp-InputArea-editor')
    .first()
    .click({ button: 'right' });
  await page
    .getByRole('menuitem', { name: 'Edit Cell with Code Llama…' })
    .click();
  await ask(box, 'use r ** 2 instead of r * r');
  const proposed = await proposal(box);
  expect(proposed).not.toBe(CELL);
  await box.getByRole('button', { name: 'Accept' }).click();
  await expect(box).toHaveCount(0);
  expect(await firstCell(page)).toEqual({ source: proposed, count: 1 }); // exactly the proposal, not run
  await expect(page.locator('.jp-OutputArea-output')).toHaveText('12.56');

  // One undo in the cell's editor restores the text as it was.
  await page.locator('.jp-Cell .jp-InputArea-editor').first().click();
  await page.keyboard.press('Control+z');
  await expect.poll(async () => (await firstCell(page)).source).toBe(CELL);
  expect((await firstCell(page)).count).toBe(1);

  // A selection (the second line's code): only it is rewritten; Reject leaves the cell.
  await page.keyboard.press('Control+Home');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Home');
  await page.keyboard.press('Shift+End');
  await page.keyboard.press('Alt+Shift+I');
  await expect(box.locator('.jp-CodeLlama-editStatus')).toHaveText(
    'What should change in the selection?'
  );
  await ask(box, 'use r ** 2 instead of r * r');
  const part = await proposal(box);
  expect(part.startsWith('def area(r):\n    ')).toBe(true);
  expect(part.endsWith('\n\nprint(area(2))')).toBe(true);
  await box.getByRole('button', { name: 'Reject' }).click();
  await expect(box).toHaveCount(0);
  expect(await firstCell(page)).toEqual({ source: CELL, count: 1 });
});

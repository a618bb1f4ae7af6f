import { expect, test } from '@jupyterlab/galata';

import {
  ask,
  lastAnswer,
  loadExtensionFromSidebar,
  logBrowserErrors,
  openNotebook,
  openSidebar,
  screenshotPath,
  TEST_SETTINGS,
  waitForAnswer
} from './helpers';

test.use({
  autoGoto: true,
  mockSettings: TEST_SETTINGS,
  viewport: { width: 1280, height: 860 }
});
test.beforeEach(({ page }) => logBrowserErrors(page));

test('fix an error from the cell context menu; the sidebar in light and dark themes', async ({
  page
}) => {
  test.setTimeout(240000);
  await openNotebook(page, 'screenshots.ipynb');
  await page.notebook.setCell(0, 'code', 'values = [3, 1, 2]\nvalues.sortt()');
  await page.notebook.runCell(0);
  await expect(page.locator('.jp-OutputArea-output')).toContainText(
    'AttributeError'
  );
  const sidebar = await openSidebar(page);
  await loadExtensionFromSidebar(sidebar);

  // The command from the cell's context menu sends the cell and its traceback.
  await page.notebook.selectCells(0);
  await page
    .locator('.jp-Cell .jp-InputArea-editor')
    .first()
    .click({ button: 'right' });
  await page
    .getByRole('menuitem', { name: 'Fix Error in Cell with Code Llama' })
    .click();
  await expect(
    sidebar.locator('.jp-CodeLlama-message.jp-mod-user')
  ).toContainText("AttributeError: 'list' object has no attribute 'sortt'");
  await expect(sidebar.locator('.jp-CodeLlama-sentContext')).toContainText(
    '1 cell'
  );
  expect(await waitForAnswer(sidebar)).toBe('done');

  // A tiny model's fix is not much to look at: the screenshots show a fresh question.
  await sidebar.getByRole('button', { name: 'New chat' }).click();
  await ask(
    sidebar,
    'Write a Python function that adds two numbers. Answer with one code block.'
  );
  expect(await waitForAnswer(sidebar)).toBe('done');
  await expect(
    lastAnswer(sidebar).getByRole('button', { name: 'Insert below' }).first()
  ).toBeVisible();

  await sidebar.getByRole('button', { name: 'Preview context' }).click();
  await expect(sidebar.locator('.jp-CodeLlama-previewSummary')).toContainText(
    'prompt tokens'
  );
  await expect(sidebar.locator('.jp-CodeLlama-previewText')).toContainText(
    'values.sortt()'
  );
  await sidebar.getByRole('button', { name: 'Hide context' }).click();

  // Room for the chat: no file browser, a wider sidebar.
  await page.evaluate(() =>
    (window as any).jupyterapp.commands.execute('application:toggle-left-area')
  );
  // The split handle lies just left of the sidebar: drag it.
  const box = (await sidebar.boundingBox())!;
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x - 2, y);
  await page.mouse.down();
  await page.mouse.move(box.x - 230, y, { steps: 5 });
  await page.mouse.up();
  await sidebar
    .locator('.jp-CodeLlama-message.jp-mod-user')
    .last()
    .scrollIntoViewIfNeeded();

  await page.mouse.move(0, 0);
  await page.screenshot({ path: screenshotPath('chat-light.png') });
  await page.theme.setDarkTheme();
  await page.mouse.move(0, 0);
  await page.screenshot({ path: screenshotPath('chat-dark.png') });
});

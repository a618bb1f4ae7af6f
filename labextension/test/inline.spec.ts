import {
  CodeLlamaInlineProvider,
  splitAtCharOffset
} from '../src/inline/provider';
import {
  autoTriggerBlock,
  DEFAULT_INLINE_SETTINGS,
  newLineTrigger,
  readSettings,
  scopeAt
} from '../src/inline/triggers';
import { FakeKernel, makeClient, READY, until } from './fakes';

const AUTOMATIC = 1;
const INVOKE = 0;

function block(
  prefix: string,
  suffix = '',
  cellType = 'code',
  settings = DEFAULT_INLINE_SETTINGS
) {
  return autoTriggerBlock({ prefix, suffix, cellType }, settings);
}

describe('trigger rules', () => {
  it('knows comments and strings from code', () => {
    expect(scopeAt('x = 1')).toBe('code');
    expect(scopeAt('x = 1  # the answer')).toBe('comment');
    expect(scopeAt('# a comment\nx = ')).toBe('code');
    expect(scopeAt('print("hello')).toBe('string');
    expect(scopeAt('print("hello")')).toBe('code');
    expect(scopeAt("s = 'it\\'s")).toBe('string');
    expect(scopeAt('s = "a # not a comment')).toBe('string');
    expect(scopeAt('s = "a # b" + ')).toBe('code');
    expect(scopeAt('def f():\n    """Docs\n    more')).toBe('string');
    expect(scopeAt('def f():\n    """Docs."""\n    return ')).toBe('code');
    expect(scopeAt("x = '''a\n'b'\n")).toBe('string');
    // An unterminated one-line string ends at the line's end.
    expect(scopeAt('s = "oops\ny = ')).toBe('code');
  });

  it('lets typing trigger at the end of code', () => {
    expect(block('df = pd.read_csv(')).toBeNull();
    expect(block('for row in rows:\n    total += ')).toBeNull();
  });

  it('never triggers by itself in a markdown or raw cell', () => {
    expect(block('# Title\nSome text', '', 'markdown')).toBe('not-code');
    expect(block('anything', '', 'raw')).toBe('not-code');
  });

  it('does not trigger inside comments or strings unless asked to', () => {
    expect(block('x = 1  # compute the')).toBe('comment');
    expect(block('print("Hello, ')).toBe('string');
    const lenient = {
      ...DEFAULT_INLINE_SETTINGS,
      triggerInComments: true,
      triggerInStrings: true
    };
    expect(block('x = 1  # compute the', '', 'code', lenient)).toBeNull();
    expect(block('print("Hello, ', '', 'code', lenient)).toBeNull();
  });

  it('allows a few closing characters right of the cursor, not more', () => {
    expect(block('print(', ')')).toBeNull();
    expect(block('f(g(', '))\nnext_line = 1')).toBeNull();
    expect(block('x = ', 'compute_total(frame)')).toBe('text-right-of-cursor');
    const strict = { ...DEFAULT_INLINE_SETTINGS, maxCharsRightOfCursor: 0 };
    expect(block('print(', ')', 'code', strict)).toBe('text-right-of-cursor');
  });

  it('does not trigger in an empty cell', () => {
    expect(block('', '')).toBe('empty');
    expect(block('   ', '')).toBe('empty');
  });

  it('asks for a suggestion on a new blank line after a comment or ":"', () => {
    expect(newLineTrigger('# load the sales data\n', '')).toBe(true);
    expect(newLineTrigger('for x in xs:\n    ', '')).toBe(true);
    expect(newLineTrigger('x = 1\n', '')).toBe(false);
    expect(newLineTrigger('x = 1\n\n', '')).toBe(false);
    expect(newLineTrigger('# note\n', 'y = 2')).toBe(false);
    expect(newLineTrigger('s = """a:\n', '')).toBe(false);
    expect(newLineTrigger('only one line', '')).toBe(false);
    expect(newLineTrigger('d = {"a":\n', '')).toBe(false);
  });

  it('reads settings over the defaults and ignores bad values', () => {
    expect(readSettings(null)).toEqual(DEFAULT_INLINE_SETTINGS);
    const read = readSettings({
      maxTokens: 16,
      multiline: 'sideways',
      maxTimeMs: -1,
      prewarm: 'yes',
      enabled: false
    });
    expect(read.maxTokens).toBe(16);
    expect(read.multiline).toBe('auto');
    expect(read.maxTimeMs).toBe(DEFAULT_INLINE_SETTINGS.maxTimeMs);
    expect(read.prewarm).toBe(true);
  });

  it('splits at JupyterLab character offsets, not UTF-16 units', () => {
    expect(splitAtCharOffset('s = "😀" + x', 6)).toEqual(['s = "😀', '" + x']);
  });
});

/** A provider on a fake kernel whose model is loaded. */
async function setup(cellType = 'code') {
  const { client, kernel } = makeClient(new FakeKernel({ status: READY }));
  await client.connect();
  const provider = new CodeLlamaInlineProvider({
    resolve: () => ({
      client,
      cellType,
      cells: [
        {
          cell_type: 'code',
          source: 'import pandas as pd',
          metadata: {}
        } as any,
        { cell_type: 'code', source: 'df = pd.', metadata: {} } as any
      ],
      current: 1
    })
  });
  return { client, kernel, provider };
}

function request(text: string, offset = text.length) {
  return { text, offset, mimeType: 'text/x-ipython' };
}

function context(triggerKind: number) {
  return { widget: null as any, triggerKind } as any;
}

describe('CodeLlamaInlineProvider', () => {
  it('sends the cell around the cursor with the notebook and streams the answer', async () => {
    const { kernel, provider } = await setup();
    const fetching = provider.fetch(request('df = pd.', 8), context(AUTOMATIC));
    await until(() => kernel.comm.requests('complete').length === 1);
    const sent = kernel.comm.requests('complete')[0];
    expect(sent).toMatchObject({
      prefix: 'df = pd.',
      suffix: '',
      current: 1,
      max_new_tokens: DEFAULT_INLINE_SETTINGS.maxTokens,
      temperature: 0
    });
    expect(sent.cells).toHaveLength(2);
    expect(sent.multiline).toBeUndefined(); // the kernel decides, and says so in each chunk

    kernel.comm.reply({
      type: 'chunk',
      request_id: sent.request_id,
      text: 'read',
      multiline: false
    });
    const list = await fetching;
    expect(list.items).toHaveLength(1);
    expect(list.items[0]).toMatchObject({
      insertText: 'read',
      isIncomplete: true
    });

    const updates: string[] = [];
    const streaming = (async () => {
      for await (const update of provider.stream(list.items[0].token!)) {
        updates.push(update.response.insertText);
      }
    })();
    kernel.comm.reply({
      type: 'chunk',
      request_id: sent.request_id,
      text: '_csv("sales.csv")\nprint(df)',
      multiline: false
    });
    kernel.comm.reply({
      type: 'done',
      request_id: sent.request_id,
      text: 'read_csv("sales.csv")',
      stop_reason: 'stop',
      timings: { first_token_s: 0.05 }
    });
    await streaming;
    // One line while streaming (a single-line suggestion), then the kernel's cleaned text.
    expect(updates[0]).toBe('read_csv("sales.csv")');
    expect(updates[updates.length - 1]).toBe('read_csv("sales.csv")');
    expect(provider.lastResult?.timings.first_token_s).toBe(0.05);
  });

  it('streams several lines when the kernel says the suggestion may span them', async () => {
    const { kernel, provider } = await setup();
    const fetching = provider.fetch(
      request('def area(r):\n    '),
      context(AUTOMATIC)
    );
    await until(() => kernel.comm.requests('complete').length === 1);
    const sent = kernel.comm.requests('complete')[0];
    expect(sent.multiline).toBeUndefined();
    kernel.comm.reply({
      type: 'chunk',
      request_id: sent.request_id,
      text: 'import math\n',
      multiline: true
    });
    kernel.comm.reply({
      type: 'chunk',
      request_id: sent.request_id,
      text: '    return',
      multiline: true
    });
    const list = await fetching;
    expect(list.items[0].insertText).toMatch(/^import math\n/);
    const updates: string[] = [];
    const streaming = (async () => {
      for await (const update of provider.stream(list.items[0].token!)) {
        updates.push(update.response.insertText);
      }
    })();
    kernel.comm.reply({
      type: 'chunk',
      request_id: sent.request_id,
      text: ' math.pi * r ** 2',
      multiline: true
    });
    // Shown while still streaming, not only once the final text comes.
    await until(() =>
      updates.includes('import math\n    return math.pi * r ** 2')
    );
    kernel.comm.reply({
      type: 'done',
      request_id: sent.request_id,
      text: 'import math',
      stop_reason: 'stop'
    });
    await streaming;
  });

  it('cancels the previous request when the next keystroke comes', async () => {
    const { kernel, provider } = await setup();
    const first = provider.fetch(request('df = pd.r'), context(AUTOMATIC));
    await until(() => kernel.comm.requests('complete').length === 1);
    const second = provider.fetch(request('df = pd.re'), context(AUTOMATIC));
    await until(() => kernel.comm.requests('complete').length === 2);
    const [a, b] = kernel.comm.requests('complete');
    expect(kernel.comm.requests('cancel')).toEqual([
      expect.objectContaining({ target_id: a.request_id })
    ]);
    expect((await first).items).toEqual([]);
    kernel.comm.reply({
      type: 'done',
      request_id: b.request_id,
      text: 'ad_csv(path)',
      stop_reason: 'stop'
    });
    expect((await second).items).toEqual([{ insertText: 'ad_csv(path)' }]);
  });

  it('shows nothing for an empty answer', async () => {
    const { kernel, provider } = await setup();
    const fetching = provider.fetch(request('x = 1'), context(AUTOMATIC));
    await until(() => kernel.comm.requests('complete').length === 1);
    const sent = kernel.comm.requests('complete')[0];
    kernel.comm.reply({
      type: 'chunk',
      request_id: sent.request_id,
      text: '\n'
    });
    kernel.comm.reply({
      type: 'done',
      request_id: sent.request_id,
      text: '',
      stop_reason: 'stop'
    });
    expect((await fetching).items).toEqual([]);
  });

  it('sends nothing from a markdown cell, inside a comment, or before the model is loaded', async () => {
    const markdown = await setup('markdown');
    expect(
      (await markdown.provider.fetch(request('# Title'), context(INVOKE))).items
    ).toEqual([]);
    expect(markdown.kernel.comm.requests('complete')).toHaveLength(0);

    const code = await setup();
    expect(
      (await code.provider.fetch(request('x = 1  # the'), context(AUTOMATIC)))
        .items
    ).toEqual([]);
    expect(code.kernel.comm.requests('complete')).toHaveLength(0);

    const { client, kernel } = makeClient(new FakeKernel());
    await client.connect();
    const provider = new CodeLlamaInlineProvider({
      resolve: () => ({ client, cellType: 'code' })
    });
    expect(
      (await provider.fetch(request('x = '), context(AUTOMATIC))).items
    ).toEqual([]);
    // Asked for explicitly (Alt+\), it says why instead.
    const explicit = await provider.fetch(request('x = '), context(INVOKE));
    expect(explicit.items[0].error?.message).toMatch(/load one/i);
    expect(kernel.comm.requests('complete')).toHaveLength(0);
  });

  it('stays quiet when the kernel is busy, but says so when asked explicitly', async () => {
    const { kernel, provider } = await setup();
    const quiet = provider.fetch(request('x = '), context(AUTOMATIC));
    await until(() => kernel.comm.requests('complete').length === 1);
    const sent = kernel.comm.requests('complete')[0];
    kernel.comm.reply({
      type: 'error',
      request_id: sent.request_id,
      code: 'busy',
      message: 'The model is busy.'
    });
    expect((await quiet).items).toEqual([]);

    const loud = provider.fetch(request('x = '), context(INVOKE));
    await until(() => kernel.comm.requests('complete').length === 2);
    const second = kernel.comm.requests('complete')[1];
    expect(second.multiline).toBe(true);
    kernel.comm.reply({
      type: 'error',
      request_id: second.request_id,
      code: 'busy',
      message: 'The model is busy.'
    });
    expect((await loud).items[0].error?.message).toBe('The model is busy.');
  });

  it('follows its settings', async () => {
    const { kernel, provider } = await setup();
    provider.configure({
      maxTokens: 12,
      multiline: 'always',
      notebookContext: false,
      variables: false
    });
    const fetching = provider.fetch(request('y = '), context(AUTOMATIC));
    await until(() => kernel.comm.requests('complete').length === 1);
    const sent = kernel.comm.requests('complete')[0];
    expect(sent).toMatchObject({
      max_new_tokens: 12,
      multiline: true,
      variables: false
    });
    expect(sent.cells).toBeUndefined();
    kernel.comm.reply({
      type: 'done',
      request_id: sent.request_id,
      text: '2',
      stop_reason: 'stop'
    });
    await fetching;
  });

  it('prewarms a code cell once the model is ready, and only then', async () => {
    const { client, kernel, provider } = await setup();
    provider.prewarm({ client, cellType: 'markdown' }, '# Title');
    provider.prewarm(
      { client, cellType: 'code', cells: [], current: 0 },
      'import numpy as np\n'
    );
    expect(kernel.comm.requests('prewarm')).toEqual([
      expect.objectContaining({
        prefix: 'import numpy as np\n',
        suffix: '',
        max_new_tokens: 1
      })
    ]);
    provider.configure({ prewarm: false });
    provider.prewarm({ client, cellType: 'code' }, 'x');
    expect(kernel.comm.requests('prewarm')).toHaveLength(1);
  });
});

/**
 * Ghost text accepted in parts (next word, line), and the next suggestion prefetched once one
 * is accepted to its end.
 */
import { acceptPart, IAcceptEditor, nextPart } from '../src/inline/accept';
import { CodeLlamaInlineProvider } from '../src/inline/provider';
import { DEFAULT_INLINE_SETTINGS, nextRequest } from '../src/inline/triggers';
import { FakeKernel, makeClient, READY, until } from './fakes';

const AUTOMATIC = 1;
const INVOKE = 0;

describe('the part of a suggestion one accept takes', () => {
  it('a word is the punctuation and spaces before a run of word characters, and that run', () => {
    expect(nextPart('math.pi * radius ** 2', 'word')).toBe('math');
    expect(nextPart('.pi * radius ** 2', 'word')).toBe('.pi');
    expect(nextPart(' * radius ** 2', 'word')).toBe(' * radius');
    expect(nextPart(') ** 2\nprint(x)', 'word')).toBe(') ** 2');
    expect(nextPart('\n    return total', 'word')).toBe('\n    return');
    expect(nextPart('größe_2 = 1', 'word')).toBe('größe_2');
    expect(nextPart(')))', 'word')).toBe(')))');
  });

  it('a line runs up to and including the next line break', () => {
    expect(nextPart('total = 0\nfor x in xs:\n    total += x', 'line')).toBe(
      'total = 0\n'
    );
    expect(nextPart('\n    return x', 'line')).toBe('\n');
    expect(nextPart('total += x', 'line')).toBe('total += x');
  });
});

/** An editor over a string, the cursor an offset into it. */
class FakeEditor implements IAcceptEditor {
  constructor(
    public source: string,
    public cursor = source.length
  ) {}

  insert(offset: number, text: string): void {
    this.source =
      this.source.slice(0, offset) + text + this.source.slice(offset);
    this.cursor = offset + text.length;
  }
}

const CELL = 'r = 2\narea = ';
const SUGGESTION = 'math.pi * r ** 2\nprint(area)';

/** A provider on a fake kernel, showing SUGGESTION after CELL. */
async function showing(cells = true) {
  const { client, kernel } = makeClient(new FakeKernel({ status: READY }));
  await client.connect();
  const editor = new FakeEditor(CELL);
  const target = () => ({
    client,
    cellType: 'code',
    ...(cells
      ? {
          cells: [
            { cell_type: 'code', source: editor.source, metadata: {} } as any
          ],
          current: 0
        }
      : {})
  });
  const provider = new CodeLlamaInlineProvider({ resolve: target });
  const fetch = (trigger = AUTOMATIC) =>
    provider.fetch(
      {
        text: editor.source,
        offset: editor.cursor,
        mimeType: 'text/x-ipython'
      },
      {
        widget: null as any,
        triggerKind: trigger
      } as any
    );
  const first = fetch(INVOKE);
  await until(() => kernel.comm.requests('complete').length === 1);
  const sent = kernel.comm.requests('complete')[0];
  kernel.comm.reply({
    type: 'done',
    request_id: sent.request_id,
    text: SUGGESTION,
    stop_reason: 'stop'
  });
  expect((await first).items).toEqual([{ insertText: SUGGESTION }]);
  return { kernel, provider, editor, fetch, target };
}

describe('accepting ghost text in parts', () => {
  it('inserts exactly the next word, and the rest stays shown without asking the kernel', async () => {
    const { kernel, provider, editor, fetch } = await showing();
    expect(acceptPart(editor, provider, 'word')).toBe(
      '.pi * r ** 2\nprint(area)'
    );
    expect(editor.source).toBe(CELL + 'math');
    expect((await fetch()).items).toEqual([
      { insertText: '.pi * r ** 2\nprint(area)' }
    ]);

    acceptPart(editor, provider, 'word');
    expect(editor.source).toBe(CELL + 'math.pi');
    expect((await fetch()).items).toEqual([
      { insertText: ' * r ** 2\nprint(area)' }
    ]);
    expect(kernel.comm.requests('complete')).toHaveLength(1);
  });

  it('inserts exactly the next line, and the rest stays shown without asking the kernel', async () => {
    const { kernel, provider, editor, fetch } = await showing();
    acceptPart(editor, provider, 'word');
    expect(acceptPart(editor, provider, 'line')).toBe('print(area)');
    expect(editor.source).toBe(CELL + 'math.pi * r ** 2\n');
    // JupyterLab drops ghost text when the cursor changes line; asked again, the rest comes back.
    expect((await fetch(INVOKE)).items).toEqual([
      { insertText: 'print(area)' }
    ]);
    expect(kernel.comm.requests('complete')).toHaveLength(1);
  });

  it('typing what the ghost text shows is answered the same way', async () => {
    const { kernel, editor, fetch } = await showing();
    editor.insert(editor.cursor, 'mat');
    expect((await fetch()).items).toEqual([
      { insertText: 'h.pi * r ** 2\nprint(area)' }
    ]);
    editor.insert(editor.cursor, 'x');
    const asked = fetch();
    await until(() => kernel.comm.requests('complete').length === 2);
    kernel.comm.reply({
      type: 'done',
      request_id: kernel.comm.requests('complete')[1].request_id,
      text: '',
      stop_reason: 'stop'
    });
    expect((await asked).items).toEqual([]);
  });

  it('does nothing where no suggestion of ours continues', async () => {
    const { provider, editor } = await showing();
    editor.insert(editor.cursor, 'x');
    expect(acceptPart(editor, provider, 'word')).toBeNull();
    expect(editor.source).toBe(CELL + 'x');
    const elsewhere = new FakeEditor(CELL, 2);
    expect(acceptPart(elsewhere, provider, 'line')).toBeNull();
    expect(elsewhere.source).toBe(CELL);
  });
});

describe('after a suggestion is accepted to its end', () => {
  it('the next request is prefetched with exactly the fields it will send', async () => {
    const { kernel, provider, editor, fetch, target } = await showing();
    acceptPart(editor, provider, 'line');
    provider.edited(target, ...splitAt(editor));
    expect(kernel.comm.requests('complete')).toHaveLength(1); // part of it only: no prefetch yet
    acceptPart(editor, provider, 'line');
    expect(editor.source).toBe(CELL + SUGGESTION);
    provider.edited(target, ...splitAt(editor));
    const [, prefetch] = kernel.comm.requests('complete');
    expect(prefetch).toMatchObject({
      prefix: CELL + SUGGESTION,
      suffix: '',
      prefetch: true
    });

    // The automatic request that JupyterLab makes next sends the same fields.
    const next = fetch();
    await until(() => kernel.comm.requests('complete').length === 3);
    const real = kernel.comm.requests('complete')[2];
    expect(withoutIds(real)).toEqual(withoutIds(prefetch));
    kernel.comm.reply({
      type: 'done',
      request_id: real.request_id,
      text: '\nprint(r)',
      stop_reason: 'stop',
      from_suggestion: true
    });
    expect((await next).items).toEqual([{ insertText: '\nprint(r)' }]);
    // Once: the same text in place again is no new acceptance.
    provider.edited(target, ...splitAt(editor));
    expect(kernel.comm.requests('complete')).toHaveLength(3);
  });

  it('prefetches nothing when switched off, or where no request would come', async () => {
    const off = await showing();
    off.provider.configure({ prefetch: false });
    off.editor.insert(off.editor.cursor, SUGGESTION);
    off.provider.edited(off.target, ...splitAt(off.editor));
    expect(off.kernel.comm.requests('complete')).toHaveLength(1);

    expect(nextRequest('x = 1\n', '', DEFAULT_INLINE_SETTINGS)).toBeNull(); // a blank line
    expect(nextRequest('# load it\n', '', DEFAULT_INLINE_SETTINGS)).toEqual({
      explicit: true
    });
    expect(nextRequest('x = f(1)', '', DEFAULT_INLINE_SETTINGS)).toEqual({
      explicit: false
    });
    expect(nextRequest('s = "abc', '', DEFAULT_INLINE_SETTINGS)).toBeNull(); // inside a string
  });
});

function splitAt(editor: FakeEditor): [string, string] {
  return [
    editor.source.slice(0, editor.cursor),
    editor.source.slice(editor.cursor)
  ];
}

function withoutIds(request: any): any {
  const { request_id, prefetch, type, ...rest } = request;
  return rest;
}

/**
 * Edit by instruction: the line diff, and what Accept / Reject / Stop do to a real shared
 * notebook model (@jupyter/ydoc, as JupyterLab's notebook uses it: one undo history per cell)
 * with the kernel link on a fake kernel.
 */
import { YCodeCell, YNotebook } from '@jupyter/ydoc';

import type { CodeLlamaClient } from '../src/client';
import { codePointOffset, diffStats, lineDiff } from '../src/edit/diff';
import { CellEdit } from '../src/edit/model';
import { CellEditView } from '../src/edit/view';
import { FakeKernel, makeClient, READY, until } from './fakes';

const CELL = 'def area(r):\n    return 3.14 * r * r\n\nprint(area(2))\n';
const NEW =
  'import math\n\ndef area(r):\n    return math.pi * r * r\n\nprint(area(2))\n';

describe('lineDiff', () => {
  it('marks the changed lines, removed before added, with the others as context', () => {
    expect(lineDiff(CELL, NEW)).toEqual([
      { kind: 'added', text: 'import math' },
      { kind: 'added', text: '' },
      { kind: 'same', text: 'def area(r):' },
      { kind: 'removed', text: '    return 3.14 * r * r' },
      { kind: 'added', text: '    return math.pi * r * r' },
      { kind: 'same', text: '' },
      { kind: 'same', text: 'print(area(2))' }
    ]);
    expect(diffStats(lineDiff(CELL, NEW))).toEqual({ added: 3, removed: 1 });
  });

  it('finds the common lines between changes (a longest common subsequence)', () => {
    const before = 'a\nb\nc\nd\ne';
    const after = 'a\nx\nc\ny\ne';
    expect(lineDiff(before, after).map(l => `${l.kind[0]}${l.text}`)).toEqual([
      'sa',
      'rb',
      'ax',
      'sc',
      'rd',
      'ay',
      'se'
    ]);
  });

  it('shows nothing changed for the same text, and all lines added to an empty cell', () => {
    expect(diffStats(lineDiff(CELL, CELL))).toEqual({ added: 0, removed: 0 });
    expect(lineDiff('', 'x = 1\n')).toEqual([{ kind: 'added', text: 'x = 1' }]);
    expect(lineDiff('x = 1', '')).toEqual([{ kind: 'removed', text: 'x = 1' }]);
  });
});

describe('codePointOffset', () => {
  it("counts a character outside the BMP once, as the kernel's Python does", () => {
    const text = 'a = "🚀"\nb = 2';
    expect(codePointOffset(text, text.indexOf('b'))).toBe(
      text.indexOf('b') - 1
    );
    expect(codePointOffset(text, 3)).toBe(3);
    expect(codePointOffset('plain', 5)).toBe(5);
  });
});

/** A notebook cell as JupyterLab makes it: its own undo history (by default), or the notebook's. */
function makeCell(source: string, documentWide = false): YCodeCell {
  // ydoc reads the new cell before it joins the document, and Yjs warns about it.
  const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
  const notebook = YNotebook.create({
    disableDocumentWideUndoRedo: !documentWide
  });
  const cell = notebook.insertCell(0, {
    cell_type: 'code',
    source
  }) as YCodeCell;
  warn.mockRestore();
  return cell;
}

async function makeEdit(
  cell: YCodeCell,
  selection: { start: number; end: number } | null = null
) {
  const { client, kernel } = makeClient(new FakeKernel({ status: READY }));
  expect(await client.connect()).toBe('ready');
  const edit = new CellEdit({
    cell,
    client: client as CodeLlamaClient,
    fields: () => ({ cells: [cell.toJSON()], current: 0 }),
    selection
  });
  /** The kernel's side: the last edit request, and replies to it. */
  const kernelSide = {
    get request(): any {
      return kernel.comm.requests('edit').slice(-1)[0];
    },
    chunk(text: string, source?: string) {
      kernel.comm.reply({
        type: 'chunk',
        request_id: this.request.request_id,
        text,
        source
      });
    },
    done(source: string, extra: Record<string, unknown> = {}) {
      kernel.comm.reply({
        type: 'done',
        request_id: this.request.request_id,
        text: '```python\n' + source + '```',
        stop_reason: 'eos',
        prompt_tokens: 50,
        cached_tokens: 0,
        generated_tokens: 20,
        tokens_evaluated: 50,
        timings: {},
        source,
        changed: source !== cell.getSource(),
        form: 'chat',
        ...extra
      });
    }
  };
  return { edit, kernel, client, kernelSide };
}

describe('CellEdit', () => {
  it('streams the proposal, and Accept puts it in the cell as one undo step', async () => {
    const cell = makeCell('x = 1\n');
    cell.setSource(CELL); // typed just before: Y would merge it with the edit's change
    const { edit, kernelSide } = await makeEdit(cell);

    edit.ask('  use math.pi ');
    expect(kernelSide.request).toMatchObject({
      instruction: 'use math.pi',
      cells: [{ source: CELL }],
      current: 0
    });
    expect(kernelSide.request.selection).toBeUndefined();
    expect(edit.state).toBe('streaming');
    kernelSide.chunk('```python\nimport math', 'import math\n' + CELL);
    await until(() => edit.proposal.startsWith('import math'));
    expect(diffStats(edit.diff)).toEqual({ added: 1, removed: 0 });
    expect(edit.accept()).toBe(false); // not while it streams

    kernelSide.done(NEW);
    await until(() => edit.state === 'ready');
    expect(edit.accept()).toBe(true);
    expect(cell.getSource()).toBe(NEW);
    expect(edit.state).toBe('accepted');

    cell.undo();
    expect(cell.getSource()).toBe(CELL); // one undo: the text before the edit, typing kept
    cell.redo();
    expect(cell.getSource()).toBe(NEW);
  });

  it("is one step of the notebook's history where undo is document-wide (notebook:undo)", async () => {
    const cell = makeCell(CELL, true);
    const notebook = cell.notebook!;
    cell.setSource(CELL + '# typed\n');
    const { edit, kernelSide } = await makeEdit(cell);
    edit.ask('use math.pi');
    kernelSide.done(NEW);
    await until(() => edit.state === 'ready');
    expect(edit.accept()).toBe(true);
    notebook.undo();
    expect(cell.getSource()).toBe(CELL + '# typed\n');
  });

  it('keeps typing right after Accept out of its undo step', async () => {
    const cell = makeCell(CELL);
    const { edit, kernelSide } = await makeEdit(cell);
    edit.ask('use math.pi');
    kernelSide.done(NEW);
    await until(() => edit.state === 'ready');
    edit.accept();
    cell.updateSource(NEW.length, NEW.length, 'x = 1\n');
    cell.undo();
    expect(cell.getSource()).toBe(NEW);
    cell.undo();
    expect(cell.getSource()).toBe(CELL);
  });

  it('Reject leaves the cell byte for byte as it was, with nothing to undo', async () => {
    const cell = makeCell(CELL);
    const { edit, kernelSide } = await makeEdit(cell);
    const undoable = cell.canUndo();
    edit.ask('use math.pi');
    kernelSide.chunk('```python\nimport math', 'import math\n' + CELL);
    kernelSide.done(NEW);
    await until(() => edit.state === 'ready');
    edit.reject();
    expect(edit.state).toBe('rejected');
    expect(cell.getSource()).toBe(CELL);
    expect(cell.canUndo()).toBe(undoable);
  });

  it('Stop cancels the request in the kernel; the cell stays and there is nothing to accept', async () => {
    const cell = makeCell(CELL);
    const { edit, kernel, kernelSide } = await makeEdit(cell);
    edit.ask('use math.pi');
    const id = kernelSide.request.request_id;
    kernelSide.chunk('```python\nimport math', 'import math\n' + CELL);
    await until(() => edit.changed);
    edit.stop();
    expect(kernel.comm.requests('cancel')).toEqual([
      expect.objectContaining({ target_id: id })
    ]);
    expect(edit.state).toBe('stopped');
    expect(edit.proposal).toBe(CELL);
    expect(edit.accept()).toBe(false);
    expect(cell.getSource()).toBe(CELL);
  });

  it('sends a selection, and refuses to accept when the cell changed meanwhile', async () => {
    const cell = makeCell(CELL);
    const { edit, kernelSide } = await makeEdit(cell, { start: 13, end: 37 });
    edit.ask('use math.pi');
    expect(kernelSide.request.selection).toEqual({ start: 13, end: 37 });
    kernelSide.done(NEW);
    await until(() => edit.state === 'ready');
    cell.setSource(CELL + '# typed meanwhile\n');
    expect(edit.accept()).toBe(false);
    expect(edit.message).toContain('changed since');
    expect(cell.getSource()).toBe(CELL + '# typed meanwhile\n');
  });

  it("shows the kernel's error and its note; an unchanged proposal cannot be accepted", async () => {
    const cell = makeCell(CELL);
    const { edit, kernel, kernelSide } = await makeEdit(cell);
    edit.ask('use math.pi');
    kernel.comm.reply({
      type: 'error',
      request_id: kernelSide.request.request_id,
      code: 'bad_request',
      message: 'The selection 5..999 is outside the cell (52 characters).'
    });
    await until(() => edit.state === 'error');
    expect(edit.message).toContain('outside the cell');

    edit.ask('use math.pi');
    kernelSide.done(CELL, {
      note: 'The answer held no code block: the cell stays as it was.'
    });
    await until(() => edit.state === 'ready');
    expect(edit.changed).toBe(false);
    expect(edit.message).toContain('no code block');
    expect(edit.accept()).toBe(false);
  });
});

describe('CellEditView', () => {
  it('renders added and removed lines, and Escape rejects', async () => {
    const cell = makeCell(CELL);
    const { edit, kernelSide } = await makeEdit(cell);
    const view = new CellEditView(edit);
    document.body.appendChild(view.node);
    edit.ask('use math.pi');
    kernelSide.done(NEW);
    await until(() => edit.state === 'ready');

    const kinds = Array.from(
      view.node.querySelectorAll('.jp-CodeLlama-diffLine')
    ).map(row => (row as HTMLElement).dataset.kind);
    expect(kinds.filter(k => k === 'added')).toHaveLength(3);
    expect(view.node.querySelector('.jp-mod-removed')?.textContent).toContain(
      'return 3.14 * r * r'
    );
    const accept = Array.from(view.node.querySelectorAll('button')).find(
      b => b.textContent === 'Accept'
    )!;
    expect(accept.disabled).toBe(false);
    expect(
      view.node.querySelector('.jp-CodeLlama-editStatus')?.textContent
    ).toBe('Proposed: +3 −1 lines.');

    const escape = new KeyboardEvent('keydown', {
      key: 'Escape',
      bubbles: true,
      cancelable: true
    });
    view.node.querySelector('input')!.dispatchEvent(escape);
    expect(escape.defaultPrevented).toBe(true);
    expect(edit.state).toBe('rejected');
    expect(cell.getSource()).toBe(CELL);
    view.dispose();
  });
});

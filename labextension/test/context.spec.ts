import type * as nbformat from '@jupyterlab/nbformat';

import {
  buildContext,
  DEFAULT_CONTEXT,
  errorText,
  lastErrorIndex
} from '../src/context';

const code = (
  source: string,
  count: number | null,
  outputs: nbformat.IOutput[] = []
): nbformat.ICodeCell => ({
  cell_type: 'code',
  source,
  metadata: {},
  execution_count: count,
  outputs
});
const error = (ename: string): nbformat.IError => ({
  output_type: 'error',
  ename,
  evalue: 'boom',
  traceback: [`\u001b[0;31m${ename}\u001b[0m: boom`]
});
const md: nbformat.IMarkdownCell = {
  cell_type: 'markdown',
  source: '# Title',
  metadata: {}
};

const cells: nbformat.ICell[] = [
  md,
  code('x = 1', 1),
  code('1 / 0', 2, [error('ZeroDivisionError')]),
  code('y = x + 1', 3),
  code('undefined_name', 4, [error('NameError')])
];

describe('buildContext', () => {
  it('sends the active cell as current, plus the cell that raised last', () => {
    const { fields } = buildContext(
      { cells, activeIndex: 3, selection: '' },
      DEFAULT_CONTEXT
    );
    expect(fields.cells!.map(c => c.source)).toEqual([
      'y = x + 1',
      'undefined_name'
    ]);
    expect(fields.current).toBe(0);
    expect(fields.variables).toBe(true);
  });

  it('sends every cell for the whole notebook, outputs as nbformat dicts', () => {
    const { fields } = buildContext(
      { cells, activeIndex: 1, selection: '' },
      { ...DEFAULT_CONTEXT, notebook: true }
    );
    expect(fields.cells).toHaveLength(5);
    expect(fields.current).toBe(1);
    expect(
      (fields.cells![4] as nbformat.ICodeCell).outputs[0].output_type
    ).toBe('error');
  });

  it('drops error outputs when the last-error chip is off', () => {
    const { fields } = buildContext(
      { cells, activeIndex: 2, selection: '' },
      { ...DEFAULT_CONTEXT, lastError: false }
    );
    expect(fields.cells).toHaveLength(1);
    expect((fields.cells![0] as nbformat.ICodeCell).outputs).toEqual([]);
  });

  it('sends no cells when every chip is off, and says so for variables', () => {
    const off = {
      activeCell: false,
      selection: false,
      notebook: false,
      variables: false,
      lastError: false
    };
    const built = buildContext({ cells, activeIndex: 2, selection: 'x' }, off);
    expect(built.fields).toEqual({ variables: false });
    expect(built.selection).toBe('');
  });

  it('quotes the selection only when its chip is on', () => {
    expect(
      buildContext(
        { cells, activeIndex: 1, selection: ' x = 1 ' },
        DEFAULT_CONTEXT
      ).selection
    ).toBe('x = 1');
  });

  it("keeps each cell's id and execution count, which the kernel matches with what it ran", () => {
    const page = [
      { ...code('x = 1', 3), id: 'ran-cell' },
      { ...code('y = 2', null), id: 'draft-cell' },
      { ...code('1 / 0', 2, [error('ZeroDivisionError')]), id: 'failed-cell' }
    ];
    for (const lastError of [true, false]) {
      const { fields } = buildContext(
        { cells: page, activeIndex: 1, selection: '' },
        { ...DEFAULT_CONTEXT, notebook: true, lastError }
      );
      expect(
        fields.cells!.map(c => [
          c.id,
          (c as nbformat.ICodeCell).execution_count
        ])
      ).toEqual([
        ['ran-cell', 3],
        ['draft-cell', null],
        ['failed-cell', 2]
      ]);
    }
  });

  it('works without a notebook', () => {
    expect(buildContext(null, DEFAULT_CONTEXT).fields).toEqual({
      variables: true
    });
  });
});

describe('errors', () => {
  it('finds the cell that raised most recently', () => {
    expect(lastErrorIndex(cells)).toBe(4);
    expect(lastErrorIndex([md, code('x', 1)])).toBeNull();
  });

  it('gives the traceback without ANSI colours', () => {
    expect(errorText(cells[2])).toBe('ZeroDivisionError: boom');
    expect(errorText(md)).toBe('');
  });
});

/**
 * The edit box shown in a cell, under its editor: the instruction, the proposal as a line diff
 * while it streams, and Edit / Stop / Accept / Reject. Escape rejects.
 */
import { Widget } from '@lumino/widgets';

import { diffStats, IDiffLine } from './diff';
import type { CellEdit, EditState } from './model';

const MARKS: Record<IDiffLine['kind'], string> = {
  same: ' ',
  added: '+',
  removed: '-'
};

export class CellEditView extends Widget {
  constructor(readonly edit: CellEdit) {
    super();
    this.addClass('jp-CodeLlama-edit');
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Code Llama edit');
    const bar = Private.element('div', 'jp-CodeLlama-editBar');
    this._input = Private.element(
      'input',
      'jp-CodeLlama-editInstruction jp-mod-styled'
    );
    this._input.type = 'text';
    this._input.placeholder =
      'Describe the change, e.g. "add type hints"; Enter sends';
    this._input.setAttribute('aria-label', 'Edit instruction');
    this._input.value = edit.instruction;
    bar.append(
      this._input,
      this._button('Edit', 'Send the instruction (again)', () =>
        edit.ask(this._input.value)
      ),
      this._button('Stop', 'Stop writing the proposal', () => edit.stop()),
      this._button(
        'Accept',
        'Put the proposal in the cell (one undo step; nothing runs)',
        () => edit.accept(),
        'jp-mod-accept'
      ),
      this._button(
        'Reject',
        'Leave the cell as it is (Escape)',
        () => edit.reject(),
        'jp-mod-reject'
      )
    );
    this._status = Private.element('div', 'jp-CodeLlama-editStatus');
    this._status.setAttribute('role', 'status');
    this._diff = Private.element('div', 'jp-CodeLlama-diff');
    this._diff.setAttribute('aria-label', 'Proposed change');
    this.node.append(bar, this._status, this._diff);
    this.node.addEventListener('keydown', this);
    edit.stateChanged.connect(this._render, this);
    this._render();
  }

  /** Put the focus in the instruction box. */
  focusInput(): void {
    this._input.focus();
    this._input.select();
  }

  handleEvent(event: Event): void {
    if (event.type !== 'keydown') {
      return;
    }
    const key = event as KeyboardEvent;
    if (key.key === 'Escape') {
      this.edit.reject();
    } else if (key.key === 'Enter' && (key.ctrlKey || key.metaKey)) {
      this.edit.accept();
    } else if (key.key === 'Enter' && key.target === this._input) {
      this.edit.ask(this._input.value);
    } else {
      return;
    }
    // Ours, not the notebook's (Enter would open the cell's editor, Escape leave it).
    key.preventDefault();
    key.stopPropagation();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.node.removeEventListener('keydown', this);
    this.edit.dispose();
    super.dispose();
  }

  private _button(
    label: string,
    title: string,
    action: () => void,
    extra = ''
  ): HTMLButtonElement {
    const button = Private.element(
      'button',
      `jp-CodeLlama-button jp-mod-styled ${extra}`.trim()
    );
    button.type = 'button';
    button.textContent = label;
    button.title = title;
    button.addEventListener('click', action);
    this._buttons[label] = button;
    return button;
  }

  private _render(): void {
    const edit = this.edit;
    const state = edit.state;
    this.node.dataset.state = state;
    this._buttons.Edit.textContent = state === 'idle' ? 'Edit' : 'Retry';
    this._buttons.Edit.disabled = state === 'streaming';
    this._buttons.Stop.hidden = state !== 'streaming';
    this._buttons.Accept.disabled = state !== 'ready' || !edit.changed;
    this._status.textContent = Private.statusText(state, edit);
    this._status.classList.toggle('jp-mod-error', state === 'error');
    this._renderDiff(state === 'idle' || state === 'error' ? [] : edit.diff);
  }

  private _renderDiff(lines: IDiffLine[]): void {
    const rows = lines.map(line => {
      const row = Private.element(
        'div',
        `jp-CodeLlama-diffLine jp-mod-${line.kind}`
      );
      row.dataset.kind = line.kind;
      const mark = Private.element('span', 'jp-CodeLlama-diffMark');
      mark.textContent = MARKS[line.kind];
      mark.setAttribute('aria-hidden', 'true');
      const text = Private.element('span', 'jp-CodeLlama-diffText');
      text.textContent = line.text;
      row.append(mark, text);
      return row;
    });
    this._diff.replaceChildren(...rows);
    this._diff.hidden = rows.length === 0;
  }

  private _input: HTMLInputElement;
  private _status: HTMLElement;
  private _diff: HTMLElement;
  private _buttons: Record<string, HTMLButtonElement> = {};
}

namespace Private {
  export function element<K extends keyof HTMLElementTagNameMap>(
    tag: K,
    className: string
  ): HTMLElementTagNameMap[K] {
    const node = document.createElement(tag);
    node.className = className;
    return node;
  }

  export function statusText(state: EditState, edit: CellEdit): string {
    const { added, removed } = diffStats(edit.diff);
    const counts = `+${added} −${removed} lines`;
    const where = edit.selection ? 'the selection' : 'the cell';
    switch (state) {
      case 'idle':
        return `What should change in ${where}?`;
      case 'streaming':
        return `Code Llama is rewriting ${where}… ${counts}`;
      case 'ready':
        return [edit.changed ? `Proposed: ${counts}.` : '', edit.message]
          .filter(Boolean)
          .join(' ');
      default:
        return edit.message;
    }
  }
}

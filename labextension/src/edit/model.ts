/**
 * One edit of one cell by instruction: the request, the proposal as it streams, and what
 * Accept and Reject do to the cell. No DOM: the view renders it, the tests drive it.
 */
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import type { IPendingRequest, IRequestOptions } from '../client';
import type { IEditRequest, IEditResult, ISelection } from '../protocol';
import { IDiffLine, lineDiff } from './diff';

/** The cell's shared source, as JupyterLab's shared cell model (`ISharedCell`) provides it. */
export interface ICellSource {
  getSource(): string;
  setSource(value: string): void;
  /**
   * Y's undo manager of the cell (of the notebook when undo is document-wide): the shared
   * cells (`YBaseCell`) have it, though `ISharedCell` does not name it.
   */
  readonly undoManager?: { stopCapturing(): void } | null;
}

/** What the edit needs from the kernel link. */
export interface IEditClient {
  request(
    type: 'edit',
    body: IEditRequest,
    options?: IRequestOptions
  ): IPendingRequest<'edit'>;
}

export type EditState =
  /** Waiting for an instruction. */
  | 'idle'
  /** Sent; the proposal streams in. */
  | 'streaming'
  /** The kernel's final proposal is shown. */
  | 'ready'
  /** Stopped by the user: nothing to accept. */
  | 'stopped'
  | 'error'
  /** Closed: the cell holds the proposal (one undo step). */
  | 'accepted'
  /** Closed: the cell is as it was. */
  | 'rejected';

/**
 * Replace a cell's source as one step of its undo history. Y's undo manager merges changes
 * made less than half a second apart: without a break on both sides, the edit would share its
 * step with the typing just before or after it.
 */
export function replaceSource(cell: ICellSource, source: string): void {
  cell.undoManager?.stopCapturing();
  cell.setSource(source);
  cell.undoManager?.stopCapturing();
}

export class CellEdit implements IDisposable {
  constructor(options: CellEdit.IOptions) {
    this._cell = options.cell;
    this._client = options.client;
    this._fields = options.fields;
    this.selection = options.selection ?? null;
    this._original = this._proposal = options.cell.getSource();
  }

  /** The part of the cell to rewrite, in code points of its source; null: the whole cell. */
  readonly selection: ISelection | null;

  get state(): EditState {
    return this._state;
  }

  get stateChanged(): ISignal<this, EditState> {
    return this._stateChanged;
  }

  get instruction(): string {
    return this._instruction;
  }

  /** The cell's source when the instruction was sent. */
  get original(): string {
    return this._original;
  }

  /** The cell's whole new source, as far as it has come. */
  get proposal(): string {
    return this._proposal;
  }

  get diff(): IDiffLine[] {
    if (this._diff === null) {
      this._diff = lineDiff(this._original, this._proposal);
    }
    return this._diff;
  }

  /** Whether Accept would change the cell. */
  get changed(): boolean {
    return this._proposal !== this._original;
  }

  /** What the kernel or the link said (a note on the proposal, or why it failed). */
  get message(): string {
    return this._message;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Send `instruction` (again: an earlier request still running is cancelled). */
  ask(instruction: string): void {
    this._pending?.cancel();
    this._instruction = instruction.trim();
    this._original = this._proposal = this._cell.getSource();
    this._message = '';
    if (!this._instruction) {
      this._set('error', 'Type what to change, e.g. "add type hints".');
      return;
    }
    const fields = this._fields();
    const body: IEditRequest = { ...fields, instruction: this._instruction };
    if (this.selection) {
      body.selection = this.selection;
    }
    const pending = this._client.request('edit', body, {
      onChunk: (_text, chunk) => {
        if (this._pending === pending && chunk.source !== undefined) {
          this._show(chunk.source);
          this._stateChanged.emit(this._state);
        }
      }
    });
    this._pending = pending;
    this._set('streaming', '');
    pending.done.then(
      result => this._pending === pending && this._finish(result),
      error =>
        this._pending === pending &&
        this._set('error', String(error.message ?? error))
    );
  }

  /** Stop the answer being written; the cell stays as it was. */
  stop(): void {
    if (this._state === 'streaming') {
      this._pending?.cancel();
      this._pending = null;
      this._show(this._original);
      this._set('stopped', 'Stopped: the cell is unchanged.');
    }
  }

  /**
   * Put the proposal in the cell, as one undo step; nothing runs. Refused (false) while the
   * answer streams, when it changes nothing, or when the cell changed since it was asked.
   */
  accept(): boolean {
    if (this._state !== 'ready' || !this.changed) {
      return false;
    }
    if (this._cell.getSource() !== this._original) {
      this._message =
        'The cell changed since the edit was asked for: ask again (Edit).';
      this._stateChanged.emit(this._state);
      return false;
    }
    replaceSource(this._cell, this._proposal);
    this._set('accepted', '');
    return true;
  }

  /** Leave the cell as it is (an answer still being written is stopped). */
  reject(): void {
    this._pending?.cancel();
    this._pending = null;
    this._set('rejected', '');
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    if (this._state === 'streaming') {
      this._pending?.cancel();
    }
    this._pending = null;
    Signal.clearData(this);
  }

  private _finish(result: IEditResult): void {
    this._pending = null;
    if (result.stop_reason === 'cancelled') {
      this._show(this._original);
      this._set('stopped', 'Stopped: the cell is unchanged.');
      return;
    }
    this._show(result.source);
    const note =
      result.note ??
      (result.changed
        ? ''
        : 'No change proposed: the cell would stay as it is.');
    this._set('ready', note);
  }

  private _show(source: string): void {
    if (source !== this._proposal) {
      this._proposal = source;
      this._diff = null;
    }
  }

  private _set(state: EditState, message: string): void {
    this._state = state;
    this._message = message;
    this._stateChanged.emit(state);
  }

  private _cell: ICellSource;
  private _client: IEditClient;
  private _fields: () => Omit<IEditRequest, 'instruction'>;
  private _state: EditState = 'idle';
  private _instruction = '';
  private _original: string;
  private _proposal: string;
  private _diff: IDiffLine[] | null = null;
  private _message = '';
  private _pending: IPendingRequest<'edit'> | null = null;
  private _isDisposed = false;
  private _stateChanged = new Signal<this, EditState>(this);
}

export namespace CellEdit {
  export interface IOptions {
    cell: ICellSource;
    client: IEditClient;
    /** The request's other fields, read at each ask: the notebook as it is then. */
    fields: () => Omit<IEditRequest, 'instruction'>;
    selection?: ISelection | null;
  }
}

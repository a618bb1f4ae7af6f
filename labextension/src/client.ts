/**
 * The link to one notebook's kernel: one `jupyter_codellama` comm, re-opened when the kernel
 * restarts or changes, with typed requests whose replies stream back by request id.
 *
 * Comm messages ride a kernel subshell where the kernel and JupyterLab support it, so a long
 * running cell does not block the chat. Where they do not, a request that gets no reply is
 * probed with a `status` ping; if that gets no reply either, the request fails with
 * `kernel_busy` (or `timeout` when the kernel is idle) instead of hanging.
 */
import type { ISessionContext } from '@jupyterlab/apputils';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import { PromiseDelegate, UUID } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import {
  COMM_TARGET,
  ErrorCode,
  ICapabilities,
  IChunkReply,
  IEngineStatus,
  IHelloReply,
  IRequestMap,
  IResultMap,
  isReply,
  LOAD_EXTENSION_CODE,
  PROTOCOL_VERSION,
  Reply,
  RequestType
} from './protocol';

/** Where the link to the kernel stands. */
export type LinkState =
  /** The notebook has no running kernel. */
  | 'no-kernel'
  /** Opening the comm and waiting for the kernel's hello. */
  | 'connecting'
  /** The kernel answered hello: requests can be sent. */
  | 'ready'
  /** The kernel has not run `%load_ext jupyter_codellama`. */
  | 'extension-missing'
  /** A cell is running and the kernel has no subshells: it cannot answer until it finishes. */
  | 'kernel-busy'
  /** The kernel speaks another protocol version. */
  | 'incompatible';

/** A failed request: `code` is the kernel's error code or one of the link's own. */
export class CodeLlamaError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string
  ) {
    super(message);
    this.name = 'CodeLlamaError';
  }
}

/** A request in flight: its id (for `cancel`), the final result, and a way to stop it. */
export interface IPendingRequest<T extends RequestType> {
  readonly requestId: string;
  readonly done: Promise<IResultMap[T]>;
  /** Ask the kernel to stop; `done` then resolves with `stop_reason: "cancelled"`. */
  cancel(): void;
}

export interface IRequestOptions {
  /** Called with each text delta (`chunk` replies), in order, and the reply it came in. */
  onChunk?: (text: string, chunk: IChunkReply) => void;
}

/** The kernel connection as far as the client uses it (a fake in the tests). */
export type IKernelLike = Pick<
  Kernel.IKernelConnection,
  | 'id'
  | 'status'
  | 'statusChanged'
  | 'connectionStatus'
  | 'info'
  | 'createComm'
  | 'requestExecute'
  | 'isDisposed'
  | 'disposed'
> & { readonly supportsSubshells?: boolean };

/** The session context as far as the client uses it. */
export interface ISessionLike {
  readonly session: { readonly kernel: IKernelLike | null } | null;
  readonly kernelChanged: ISignal<unknown, unknown>;
  readonly isDisposed: boolean;
}

/**
 * One notebook's link to its kernel. Created through `ICodeLlamaClient.forSession`, which keeps
 * one per session context (that is, per kernel).
 */
export class CodeLlamaClient implements IDisposable {
  constructor(options: CodeLlamaClient.IOptions) {
    this._session = options.sessionContext;
    this._timeouts = {
      ...CodeLlamaClient.DEFAULT_TIMEOUTS,
      ...options.timeouts
    };
    this.reloadAfterRestart = options.reloadAfterRestart ?? true;
    this._session.kernelChanged.connect(this._onKernelChanged, this);
    this._attach(this._session.session?.kernel ?? null);
  }

  /** Run `%load_ext jupyter_codellama` again after a restart if the old kernel had it. */
  reloadAfterRestart: boolean;

  get state(): LinkState {
    return this._state;
  }

  /** Emitted when `state` changes. */
  get stateChanged(): ISignal<this, LinkState> {
    return this._stateChanged;
  }

  /** The engine status last reported by the kernel (replies and broadcasts). */
  get status(): IEngineStatus | null {
    return this._status;
  }

  get statusChanged(): ISignal<this, IEngineStatus | null> {
    return this._statusChanged;
  }

  /** The kernel's catalogue and default model, from its hello. */
  get capabilities(): ICapabilities | null {
    return this._capabilities;
  }

  /** The jupyter-codellama version in the kernel. */
  get kernelVersion(): string | null {
    return this._kernelVersion;
  }

  /** A human explanation of the current state when it is not `ready` ('' otherwise). */
  get message(): string {
    return this._message;
  }

  /** Whether comm messages ride a kernel subshell (the chat answers while a cell runs). */
  get usesSubshell(): boolean {
    return this._subshell;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  setTimeouts(timeouts: Partial<CodeLlamaClient.ITimeouts>): void {
    this._timeouts = { ...this._timeouts, ...timeouts };
  }

  /** (Re)open the comm and say hello; resolves once the state is known. */
  connect(): Promise<LinkState> {
    const kernel = this._kernel;
    if (this._connecting && this._connecting.kernel === kernel) {
      return this._connecting.attempt;
    }
    const attempt = this._connect().finally(() => {
      if (this._connecting?.attempt === attempt) {
        this._connecting = null;
      }
    });
    this._connecting = { kernel, attempt };
    return attempt;
  }

  /** Run `%load_ext jupyter_codellama` silently in the kernel, then connect. */
  async loadExtension(): Promise<LinkState> {
    const kernel = this._kernel;
    if (!kernel) {
      return this._state;
    }
    this._setState('connecting', '');
    const future = kernel.requestExecute(
      {
        code: LOAD_EXTENSION_CODE,
        silent: true,
        store_history: false,
        stop_on_error: false
      },
      true
    );
    let failure = '';
    future.onIOPub = msg => {
      if (msg.header.msg_type === 'error') {
        const content = msg.content as KernelMessage.IErrorMsg['content'];
        failure = `${content.ename}: ${content.evalue}`;
      }
    };
    await future.done.catch(() => undefined);
    if (failure) {
      this._setState(
        'extension-missing',
        `Loading the extension failed: ${failure}`
      );
      return this._state;
    }
    this._extensionWanted = true;
    return this.connect();
  }

  /**
   * Send a request. Chunks stream to `options.onChunk`; `done` resolves with the kernel's final
   * reply (or rejects with a `CodeLlamaError`).
   */
  request<T extends RequestType>(
    type: T,
    body: IRequestMap[T],
    options: IRequestOptions = {}
  ): IPendingRequest<T> {
    const requestId = UUID.uuid4();
    const delegate = new PromiseDelegate<IResultMap[T]>();
    // Nobody may be awaiting a fire-and-forget request (a cancel): keep it from being unhandled.
    delegate.promise.catch(() => undefined);
    const pending: Private.IPending = {
      type,
      onChunk: options.onChunk,
      resolve: value => delegate.resolve(value as IResultMap[T]),
      reject: error => delegate.reject(error),
      watchdog: null,
      answered: false
    };
    const cancel = () => {
      if (this._pending.has(requestId) && type !== 'cancel') {
        this.request('cancel', { target_id: requestId });
      }
    };
    const handle = { requestId, done: delegate.promise, cancel };

    const comm = this._comm;
    if (this._state !== 'ready' || !comm) {
      const code = this._state === 'no-kernel' ? 'no_kernel' : 'disconnected';
      pending.reject(
        new CodeLlamaError(
          code,
          this._message || 'Not connected to the kernel.'
        )
      );
      return handle;
    }
    this._pending.set(requestId, pending);
    try {
      comm.send({ ...body, type, request_id: requestId } as any);
    } catch (error) {
      this._settle(
        requestId,
        new CodeLlamaError('disconnected', String(error))
      );
      return handle;
    }
    this._watch(requestId);
    return handle;
  }

  /** Ask the kernel for its engine status (also refreshes `status`). */
  async refreshStatus(): Promise<IEngineStatus> {
    return this.request('status', {}).done;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._session.kernelChanged.disconnect(this._onKernelChanged, this);
    this._detach('disconnected', 'The client was closed.');
    Signal.clearData(this);
  }

  // -- the connection ------------------------------------------------------------------------

  private _onKernelChanged(): void {
    const kernel = this._session.session?.kernel ?? null;
    if (kernel === this._kernel) {
      return; // a restart keeps the connection: the status handler deals with it
    }
    this._extensionWanted = false;
    this._attach(kernel);
  }

  private _attach(kernel: IKernelLike | null): void {
    this._detach('kernel_restarted', 'The kernel changed.');
    this._kernel = kernel;
    if (!kernel) {
      this._setState('no-kernel', 'The notebook has no kernel.');
      return;
    }
    kernel.statusChanged.connect(this._onKernelStatus, this);
    void this.connect();
  }

  private _detach(code: ErrorCode, message: string): void {
    if (this._kernel) {
      this._kernel.statusChanged.disconnect(this._onKernelStatus, this);
    }
    this._closeComm(code, message);
    this._kernel = null;
  }

  private _onKernelStatus(kernel: IKernelLike, status: Kernel.Status): void {
    if (kernel !== this._kernel) {
      return;
    }
    if (status === 'restarting' || status === 'autorestarting') {
      this._restarting = true;
      this._closeComm('kernel_restarted', 'The kernel restarted.');
      this._setState('connecting', 'The kernel is restarting…');
      this._setStatus(null);
    } else if (status === 'dead') {
      this._closeComm('kernel_restarted', 'The kernel died.');
      this._setState('no-kernel', 'The kernel is dead; restart it.');
    } else if (status === 'idle' && this._restarting) {
      this._restarting = false;
      if (this._extensionWanted && this.reloadAfterRestart) {
        void this.loadExtension();
      } else {
        void this.connect();
      }
    } else if (status === 'idle' && this._state === 'kernel-busy') {
      void this.connect();
    }
  }

  private async _connect(): Promise<LinkState> {
    const attempt = ++this._attempts;
    const kernel = this._kernel;
    if (!kernel || kernel.isDisposed) {
      this._setState('no-kernel', 'The notebook has no kernel.');
      return this._state;
    }
    this._closeComm('disconnected', 'Reconnecting.');
    this._setState('connecting', 'Connecting to the kernel…');
    let comm: Kernel.IComm;
    try {
      await withTimeout(kernel.info, this._timeouts.hello);
      comm = kernel.createComm(COMM_TARGET);
      this._subshell = await Private.waitForSubshell(
        kernel,
        comm,
        this._timeouts.hello
      );
    } catch (error) {
      if (attempt !== this._attempts || kernel !== this._kernel) {
        return this._state;
      }
      this._setState(
        kernel.status === 'busy' ? 'kernel-busy' : 'no-kernel',
        kernel.status === 'busy'
          ? Private.BUSY_MESSAGE
          : `Could not reach the kernel: ${String(error)}`
      );
      return this._state;
    }
    if (attempt !== this._attempts || kernel !== this._kernel) {
      comm.dispose();
      return this._state;
    }
    this._comm = comm;
    const hello = new PromiseDelegate<IHelloReply | null>();
    this._hello = hello;
    let closedByKernel = false;
    comm.onMsg = msg => this._onCommMsg(comm, msg);
    comm.onClose = () => {
      if (this._comm === comm) {
        closedByKernel = true;
        this._comm = null;
        hello.resolve(null);
        this._failAll('disconnected', 'The kernel closed the connection.');
        if (this._state === 'ready') {
          this._setState('extension-missing', Private.MISSING_MESSAGE);
        }
      }
    };
    const requestId = UUID.uuid4();
    try {
      comm.open({});
      comm.send({
        type: 'hello',
        request_id: requestId,
        protocol_version: PROTOCOL_VERSION
      });
    } catch (error) {
      this._setState(
        'no-kernel',
        `Could not open the connection: ${String(error)}`
      );
      return this._state;
    }
    this._helloId = requestId;
    const timer = setTimeout(() => hello.resolve(null), this._timeouts.hello);
    const reply = await hello.promise;
    clearTimeout(timer);
    if (attempt !== this._attempts || kernel !== this._kernel) {
      return this._state; // superseded by a newer attempt or another kernel
    }
    if (reply === null) {
      if (this._state === 'incompatible') {
        return this._state;
      }
      // No hello: the kernel closed the comm (no such target), or ignored it, or a cell holds
      // the kernel and there is no subshell to answer on.
      const busy =
        !closedByKernel && kernel.status === 'busy' && !this._subshell;
      this._closeComm('extension_missing', 'No hello from the kernel.');
      this._setState(
        busy ? 'kernel-busy' : 'extension-missing',
        busy ? Private.BUSY_MESSAGE : Private.MISSING_MESSAGE
      );
      return this._state;
    }
    this._extensionWanted = true;
    this._capabilities = reply.capabilities;
    this._kernelVersion = reply.kernel_version;
    this._setStatus(reply.status);
    this._setState('ready', '');
    return this._state;
  }

  private _closeComm(code: ErrorCode, message: string): void {
    const comm = this._comm;
    this._comm = null;
    this._hello?.resolve(null);
    this._hello = null;
    this._failAll(code, message);
    if (comm && !comm.isDisposed) {
      try {
        comm.close();
      } catch {
        comm.dispose();
      }
    }
  }

  private _onCommMsg(comm: Kernel.IComm, msg: KernelMessage.ICommMsgMsg): void {
    if (comm !== this._comm) {
      return;
    }
    const data = msg.content.data as unknown;
    if (!isReply(data)) {
      return;
    }
    this._onReply(data);
  }

  private _onReply(reply: Reply): void {
    if (reply.type === 'status' && reply.status) {
      this._setStatus(reply.status);
    }
    if (reply.request_id !== null && reply.request_id === this._helloId) {
      this._helloId = null;
      if (reply.type === 'hello') {
        this._hello?.resolve(reply);
      } else if (reply.type === 'error') {
        this._setState('incompatible', reply.message);
        this._hello?.resolve(null);
      }
      return;
    }
    if (reply.request_id === null) {
      return;
    }
    const pending = this._pending.get(reply.request_id);
    if (!pending) {
      return;
    }
    pending.answered = true;
    switch (reply.type) {
      case 'chunk':
        pending.onChunk?.(reply.text, reply);
        break;
      case 'error':
        this._settle(
          reply.request_id,
          new CodeLlamaError(reply.code, reply.message)
        );
        break;
      case 'status':
        this._settle(reply.request_id, undefined, reply.status);
        break;
      case 'done': {
        const { type: _type, request_id: _id, ...result } = reply;
        if (result.status && typeof result.status === 'object') {
          this._setStatus(result.status as IEngineStatus);
        }
        this._settle(reply.request_id, undefined, result);
        break;
      }
      case 'hello':
        this._settle(reply.request_id, undefined, reply);
        break;
    }
  }

  private _settle(
    requestId: string,
    error?: CodeLlamaError,
    value?: unknown
  ): void {
    const pending = this._pending.get(requestId);
    if (!pending) {
      return;
    }
    this._pending.delete(requestId);
    if (pending.watchdog !== null) {
      clearTimeout(pending.watchdog);
    }
    if (error) {
      pending.reject(error);
    } else {
      pending.resolve(value);
    }
  }

  private _failAll(code: ErrorCode, message: string): void {
    for (const id of Array.from(this._pending.keys())) {
      this._settle(id, new CodeLlamaError(code, message));
    }
  }

  /**
   * Until the request's first reply: every `reply` ms without one, ping with `status`. A ping
   * that is not answered within `ping` ms means the kernel cannot answer now.
   */
  private _watch(requestId: string): void {
    const pending = this._pending.get(requestId);
    if (!pending) {
      return;
    }
    if (pending.type === 'status' || pending.type === 'cancel') {
      // Answered by the comm handler at once: these are the pings.
      pending.watchdog = setTimeout(
        () => this._giveUp(requestId),
        this._timeouts.ping
      );
      return;
    }
    pending.watchdog = setTimeout(() => {
      pending.watchdog = null;
      if (!this._pending.has(requestId) || pending.answered) {
        return;
      }
      const ping = this.request('status', {});
      ping.done.then(
        () =>
          this._pending.has(requestId) &&
          !pending.answered &&
          this._watch(requestId),
        () => this._giveUp(requestId)
      );
    }, this._timeouts.reply);
  }

  private _giveUp(requestId: string): void {
    if (!this._pending.has(requestId)) {
      return;
    }
    const busy = this._kernel?.status === 'busy';
    // The kernel still gets the request later: make sure it does not start then.
    const comm = this._comm;
    const type = this._pending.get(requestId)?.type;
    if (
      comm &&
      (type === 'chat' || type === 'complete' || type === 'prewarm')
    ) {
      try {
        comm.send({
          type: 'cancel',
          request_id: UUID.uuid4(),
          target_id: requestId
        });
      } catch {
        // The connection is gone; nothing will run.
      }
    }
    this._settle(
      requestId,
      busy
        ? new CodeLlamaError('kernel_busy', Private.BUSY_MESSAGE)
        : new CodeLlamaError('timeout', 'The kernel did not answer in time.')
    );
  }

  private _setState(state: LinkState, message: string): void {
    const changed = state !== this._state || message !== this._message;
    this._state = state;
    this._message = message;
    if (changed) {
      this._stateChanged.emit(state);
    }
  }

  private _setStatus(status: IEngineStatus | null): void {
    this._status = status;
    this._statusChanged.emit(status);
  }

  private _session: ISessionLike;
  private _kernel: IKernelLike | null = null;
  private _comm: Kernel.IComm | null = null;
  private _hello: PromiseDelegate<IHelloReply | null> | null = null;
  private _helloId: string | null = null;
  private _connecting: {
    kernel: IKernelLike | null;
    attempt: Promise<LinkState>;
  } | null = null;
  private _pending = new Map<string, Private.IPending>();
  private _state: LinkState = 'no-kernel';
  private _message = '';
  private _status: IEngineStatus | null = null;
  private _capabilities: ICapabilities | null = null;
  private _kernelVersion: string | null = null;
  private _subshell = false;
  private _attempts = 0;
  private _restarting = false;
  private _extensionWanted = false;
  private _timeouts: CodeLlamaClient.ITimeouts;
  private _isDisposed = false;
  private _stateChanged = new Signal<this, LinkState>(this);
  private _statusChanged = new Signal<this, IEngineStatus | null>(this);
}

export namespace CodeLlamaClient {
  /** Milliseconds. */
  export interface ITimeouts {
    /** Wait for the kernel's hello (and for its info / subshell at connect). */
    hello: number;
    /** Without any reply to a request for this long, ping the kernel. */
    reply: number;
    /** A ping unanswered for this long means the kernel cannot answer now. */
    ping: number;
  }

  export const DEFAULT_TIMEOUTS: ITimeouts = {
    hello: 8000,
    reply: 4000,
    ping: 4000
  };

  export interface IOptions {
    sessionContext: ISessionLike | ISessionContext;
    timeouts?: Partial<ITimeouts>;
    reloadAfterRestart?: boolean;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no answer after ${ms} ms`)),
      ms
    );
    promise.then(
      value => {
        clearTimeout(timer);
        resolve(value);
      },
      error => {
        clearTimeout(timer);
        reject(error);
      }
    );
  });
}

namespace Private {
  export interface IPending {
    type: RequestType;
    onChunk?: (text: string, chunk: IChunkReply) => void;
    resolve: (value: unknown) => void;
    reject: (error: CodeLlamaError) => void;
    watchdog: ReturnType<typeof setTimeout> | null;
    /** Whether any reply (a chunk included) has arrived. */
    answered: boolean;
  }

  export const BUSY_MESSAGE =
    'The kernel is busy running a cell and has no subshell to answer on; ' +
    'try again when the cell has finished.';

  export const MISSING_MESSAGE =
    'The kernel has not loaded jupyter-codellama (%load_ext jupyter_codellama).';

  /**
   * Where JupyterLab sends comms over subshells, the comm's first message must wait for its
   * subshell: sent earlier, it would go to the main shell and queue behind a running cell.
   */
  export async function waitForSubshell(
    kernel: IKernelLike,
    comm: Kernel.IComm,
    timeout: number
  ): Promise<boolean> {
    const handler = comm as Kernel.IComm & {
      commsOverSubshells?: string;
      subshellStarted?: Promise<void>;
      subshellId?: string | null;
    };
    if (
      !kernel.supportsSubshells ||
      !handler.subshellStarted ||
      handler.commsOverSubshells === undefined ||
      handler.commsOverSubshells === 'disabled'
    ) {
      return false;
    }
    await withTimeout(handler.subshellStarted, timeout);
    return !!handler.subshellId;
  }
}

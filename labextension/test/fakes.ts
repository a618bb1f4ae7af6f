/**
 * A fake kernel and comm that speak the protocol, for the client and widget tests.
 */
import type { Kernel } from '@jupyterlab/services';
import { PromiseDelegate } from '@lumino/coreutils';
import { Signal } from '@lumino/signaling';

import { CodeLlamaClient } from '../src/client';
import type { IEngineStatus, IModelSpec } from '../src/protocol';

export const MODELS: IModelSpec[] = [
  {
    name: 'embedded',
    repo_id: 'SmolLM2-135M-Instruct',
    family: 'embedded',
    params_b: 0.135,
    context_length: 8192,
    supports_infill: false,
    chat_format: 'template',
    aliases: ['smollm2'],
    nf4_gb: null
  },
  {
    name: '7b-instruct',
    repo_id: 'codellama/CodeLlama-7b-Instruct-hf',
    family: 'codellama',
    params_b: 6.74,
    context_length: 16384,
    supports_infill: true,
    chat_format: 'llama2-inst',
    aliases: [],
    nf4_gb: 3.7
  }
];

export const UNLOADED: IEngineStatus = {
  state: 'unloaded',
  busy: false,
  queued: 0
};
export const READY: IEngineStatus = {
  state: 'ready',
  busy: false,
  queued: 0,
  model: 'embedded',
  quantization: 'none',
  device: 'cpu',
  memory: { cpu: '0.50 GiB' }
};

/** What the fake kernel does with a comm. */
export type Behaviour =
  /** jupyter_codellama is loaded: hello is answered. */
  | 'extension'
  /** No such comm target: the kernel closes the comm. */
  | 'missing'
  /** A cell holds the kernel (no subshell): nothing is answered. */
  | 'silent';

export class FakeComm {
  constructor(
    readonly kernel: FakeKernel,
    readonly targetName: string
  ) {}

  readonly commId = `comm-${++FakeComm.count}`;
  isDisposed = false;
  opened = false;
  sent: any[] = [];
  onMsg: (msg: any) => void = () => undefined;
  onClose: (msg: any) => void = () => undefined;
  commsOverSubshells?: string;
  subshellStarted?: Promise<void>;
  subshellId?: string | null;
  /** When `open` was called relative to the subshell (for the subshell test). */
  openedBeforeSubshell = false;

  open(): any {
    this.opened = true;
    this.openedBeforeSubshell =
      this.subshellStarted !== undefined && !this.subshellId;
    if (this.kernel.behaviour === 'missing') {
      void Promise.resolve().then(() => this.closeFromKernel());
    }
    return {};
  }

  send(data: any): any {
    if (this.isDisposed) {
      throw new Error('Cannot send');
    }
    this.sent.push(data);
    this.kernel.onSend(this, data);
    return {};
  }

  close(): any {
    this.isDisposed = true;
    return {};
  }

  dispose(): void {
    this.isDisposed = true;
  }

  /** A reply from the kernel. */
  reply(data: any): void {
    this.onMsg({ content: { comm_id: this.commId, data } });
  }

  closeFromKernel(): void {
    this.isDisposed = true;
    this.onClose({ content: { comm_id: this.commId, data: {} } });
  }

  /** The requests of `type` sent so far. */
  requests(type: string): any[] {
    return this.sent.filter(m => m.type === type);
  }

  static count = 0;
}

export class FakeKernel {
  constructor(
    options: {
      behaviour?: Behaviour;
      status?: IEngineStatus;
      subshells?: boolean;
    } = {}
  ) {
    this.behaviour = options.behaviour ?? 'extension';
    this.engineStatus = options.status ?? UNLOADED;
    this.supportsSubshells = options.subshells ?? false;
  }

  readonly id = `kernel-${++FakeKernel.count}`;
  behaviour: Behaviour;
  engineStatus: IEngineStatus;
  supportsSubshells: boolean;
  protocolVersion = 1;
  status: Kernel.Status = 'idle';
  connectionStatus: Kernel.ConnectionStatus = 'connected';
  info = Promise.resolve({} as any);
  isDisposed = false;
  statusChanged = new Signal<FakeKernel, Kernel.Status>(this);
  disposed = new Signal<FakeKernel, void>(this);
  comms: FakeComm[] = [];
  executed: { code: string; silent: boolean }[] = [];
  /** Answer `status` pings (default) even while other requests get no reply. */
  answerPings = true;
  /** Set for subshell tests: comms get a subshell that starts when this resolves. */
  subshell: PromiseDelegate<void> | null = null;

  get comm(): FakeComm {
    return this.comms[this.comms.length - 1];
  }

  createComm(target: string): FakeComm {
    const comm = new FakeComm(this, target);
    if (this.subshell) {
      comm.commsOverSubshells = 'perCommTarget';
      comm.subshellId = null;
      comm.subshellStarted = this.subshell.promise.then(() => {
        comm.subshellId = 'subshell-1';
      });
    }
    this.comms.push(comm);
    return comm;
  }

  requestExecute(content: { code: string; silent?: boolean }): any {
    this.executed.push({ code: content.code, silent: !!content.silent });
    if (content.code === '%load_ext jupyter_codellama') {
      this.behaviour = 'extension';
    }
    return { done: Promise.resolve({}), onIOPub: null };
  }

  setStatus(status: Kernel.Status): void {
    this.status = status;
    this.statusChanged.emit(status);
  }

  /** What JupyterLab does on a restart: status restarting → idle; the kernel forgets all. */
  async restart(): Promise<void> {
    this.setStatus('restarting');
    this.behaviour = 'missing';
    this.engineStatus = UNLOADED;
    await Promise.resolve();
    this.setStatus('idle');
  }

  onSend(comm: FakeComm, data: any): void {
    if (this.behaviour === 'silent') {
      return;
    }
    if (data.type === 'hello') {
      void Promise.resolve().then(() => {
        if (data.protocol_version !== this.protocolVersion) {
          comm.reply({
            type: 'error',
            request_id: data.request_id,
            code: 'protocol_version',
            message: 'speaks 2'
          });
          return;
        }
        comm.reply({
          type: 'hello',
          request_id: data.request_id,
          protocol_version: this.protocolVersion,
          kernel_version: '0.1.0',
          status: this.engineStatus,
          capabilities: { models: MODELS, default_model: null }
        });
      });
    } else if (data.type === 'status' && this.answerPings) {
      void Promise.resolve().then(() =>
        comm.reply({
          type: 'status',
          request_id: data.request_id,
          status: this.engineStatus
        })
      );
    }
  }

  static count = 0;
}

export class FakeSession {
  constructor(kernel: FakeKernel | null) {
    this.session = { kernel: kernel as any };
  }

  session: { kernel: any };
  kernelChanged = new Signal<FakeSession, unknown>(this);
  isDisposed = false;

  get kernel(): FakeKernel {
    return this.session.kernel;
  }

  changeKernel(kernel: FakeKernel | null): void {
    this.session = { kernel };
    this.kernelChanged.emit(kernel);
  }
}

/** A client on a fake kernel, with short timeouts. */
export function makeClient(
  kernel: FakeKernel | null = new FakeKernel(),
  timeouts: Partial<CodeLlamaClient.ITimeouts> = {
    hello: 200,
    reply: 40,
    ping: 40
  }
): { client: CodeLlamaClient; session: FakeSession; kernel: FakeKernel } {
  const session = new FakeSession(kernel);
  const client = new CodeLlamaClient({
    sessionContext: session as any,
    timeouts
  });
  return { client, session, kernel: kernel! };
}

/** Resolve when `predicate()` holds (polled), or fail after `timeout` ms. */
export async function until(
  predicate: () => boolean,
  timeout = 2000
): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeout) {
      throw new Error('condition not met in time');
    }
    await new Promise(resolve => setTimeout(resolve, 5));
  }
}

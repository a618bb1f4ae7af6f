/**
 * The `jupyter_codellama` comm protocol, version 1: the TypeScript mirror of
 * `jupyter_codellama/comm.py`. Keep both in step; the kernel rejects any other version.
 *
 * Every request is `{type, request_id, ...}`. Replies carry the same `request_id` and are
 * `chunk` (a text delta), `done` (the final result), `error`, or, for `hello` and `status`,
 * a message of that type. The kernel also broadcasts `status` with `request_id: null`
 * whenever the engine's state or load progress changes.
 *
 * Every request ends with exactly one `done`, `error`, `hello` or `status` reply. A field
 * larger than the kernel accepts (`FIELD_LIMITS` in comm.py) is refused with `bad_request`;
 * a request without a usable `request_id` (a non-empty string of at most 200 characters) gets
 * an `error` with `request_id: null`.
 */
import type * as nbformat from '@jupyterlab/nbformat';

export const PROTOCOL_VERSION = 1;
export const COMM_TARGET = 'jupyter_codellama';
/** What the front end runs (silently) when the kernel has not loaded the extension. */
export const LOAD_EXTENSION_CODE = '%load_ext jupyter_codellama';

export type RequestType =
  | 'hello'
  | 'status'
  | 'load'
  | 'unload'
  | 'chat'
  | 'explain'
  | 'fix'
  | 'complete'
  | 'prewarm'
  | 'cancel'
  | 'context-preview';

/** Codes the kernel sends in `error` replies. */
export type KernelErrorCode =
  | 'bad_request'
  | 'unknown_type'
  | 'protocol_version'
  | 'busy'
  | 'not_loaded'
  | 'load_failed'
  | 'generation_failed'
  | 'prompt_too_long'
  | 'internal';

/** Codes the front end adds for failures of the link itself. */
export type LinkErrorCode =
  | 'kernel_busy'
  | 'timeout'
  | 'no_kernel'
  | 'extension_missing'
  | 'kernel_restarted'
  | 'disconnected';

export type ErrorCode = KernelErrorCode | LinkErrorCode;

// ---------------------------------------------------------------------------------------------
// Engine status and the catalogue

export type EngineState = 'unloaded' | 'loading' | 'ready' | 'error';

export interface ILoadProgress {
  stage: string;
  fraction: number;
}

/** `Engine.status()`: model fields are present once a model is loaded. */
export interface IEngineStatus {
  state: EngineState;
  progress?: ILoadProgress;
  error?: string;
  busy: boolean;
  queued: number;
  model?: string;
  repo_id?: string;
  quantization?: string;
  dtype?: string;
  device?: string;
  device_map?: unknown;
  /** Memory in use by device, e.g. `{"cpu": "0.50 GiB"}`. */
  memory?: Record<string, string>;
  supports_infill?: boolean;
  chat_format?: string | null;
  context_length?: number;
  load_seconds?: number;
  warnings?: string[];
  prefix_cache?: { entries: number; hits: number; misses: number };
  /** Time to first token of the recent inline completions (queue included), in ms. */
  completion_latency_ms?: { p50: number; p95: number; n: number };
}

/** One entry of the kernel's model catalogue (`ModelSpec.to_dict()`). */
export interface IModelSpec {
  name: string;
  repo_id: string;
  family: 'codellama' | 'embedded' | 'custom';
  params_b: number;
  context_length: number;
  supports_infill: boolean;
  chat_format: string | null;
  size?: string;
  variant?: 'base' | 'python' | 'instruct' | null;
  aliases: string[];
  description?: string;
  nf4_gb?: number | null;
}

export interface ICapabilities {
  models: IModelSpec[];
  default_model: string | null;
}

// ---------------------------------------------------------------------------------------------
// Requests (without `type` and `request_id`, which the client adds)

export interface IChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** The notebook around the user: cells as nbformat dicts, outputs included. */
export interface INotebookContextFields {
  cells?: nbformat.ICell[];
  /** Index into `cells` of the active cell. */
  current?: number;
  /** Include live variables from the kernel's namespace (default true on the kernel). */
  variables?: boolean;
}

export interface IGenerationOptions {
  max_new_tokens?: number;
  temperature?: number;
  stop?: string[];
  max_time_ms?: number;
}

export interface IChatRequest extends INotebookContextFields, IGenerationOptions {
  messages: IChatMessage[];
  system?: string;
}

/** Explain the current cell (`current` indexes `cells`), or fix the error its outputs show; the
 * kernel words the question. `messages` are the conversation so far (ending with an answer). */
export interface ICellTaskRequest extends INotebookContextFields, IGenerationOptions {
  messages?: IChatMessage[];
}

/** The requests a chat conversation sends. */
export type ChatTask = 'chat' | 'explain' | 'fix';

/** llama.cpp `/infill`-shaped completion request. */
export interface ICompleteRequest extends INotebookContextFields, IGenerationOptions {
  prefix: string;
  suffix?: string;
  mode?: 'psm' | 'spm';
  extra?: { label: string; text: string }[];
  stream?: boolean;
  /** Let the answer run over several lines; the kernel decides from the prefix when absent. */
  multiline?: boolean;
}

export interface ILoadRequest {
  model?: string;
  quantization?: string;
  gpu_memory?: string;
  cpu_memory?: string;
  device?: string;
}

export type IContextPreviewRequest =
  | ({ for?: 'chat' } & IChatRequest)
  | ({ for: 'explain' | 'fix' } & ICellTaskRequest)
  | ({ for: 'complete' } & ICompleteRequest);

export interface IRequestMap {
  hello: { protocol_version: number };
  status: Record<string, never>;
  load: ILoadRequest;
  unload: Record<string, never>;
  chat: IChatRequest;
  explain: ICellTaskRequest;
  fix: ICellTaskRequest;
  complete: ICompleteRequest;
  /** Prefill the KV cache with this prompt (a cell got focus); generates nothing shown. */
  prewarm: ICompleteRequest;
  cancel: { target_id: string };
  'context-preview': IContextPreviewRequest;
}

export type Request<T extends RequestType = RequestType> = IRequestMap[T] & {
  type: T;
  request_id: string;
};

// ---------------------------------------------------------------------------------------------
// Replies

export type StopReason = 'eos' | 'stop' | 'length' | 'time' | 'cancelled' | 'error';

export interface ITimings {
  queue_s?: number;
  prefill_s?: number;
  first_token_s?: number;
  total_s?: number;
  tokens_per_s?: number;
}

export interface IGenerationResult {
  text: string;
  stop_reason: StopReason;
  prompt_tokens: number;
  cached_tokens: number;
  generated_tokens: number;
  tokens_evaluated: number;
  timings: ITimings;
  /** `complete` only: the model's text before clean-up. */
  raw_text?: string;
}

export interface IContextItem {
  kind: 'current' | 'outputs' | 'cell' | 'variable';
  label: string;
  tokens: number;
  truncated: boolean;
}

export interface IContextPreview {
  kind: string;
  text: string;
  ids: number[];
  tokens: number;
  window: number;
  max_new_tokens: number;
  stop: string[];
  stop_token_ids: number[];
  budget: number;
  used: number;
  included: IContextItem[];
  cut: IContextItem[];
  notes: string[];
}

export interface IHelloReply {
  type: 'hello';
  request_id: string;
  protocol_version: number;
  kernel_version: string;
  status: IEngineStatus;
  capabilities: ICapabilities;
}

export interface IStatusReply {
  type: 'status';
  request_id: string | null;
  status: IEngineStatus;
}

export interface IChunkReply {
  type: 'chunk';
  request_id: string;
  text: string;
}

export interface IDoneReply {
  type: 'done';
  request_id: string;
  [key: string]: unknown;
}

export interface IErrorReply {
  type: 'error';
  request_id: string | null;
  code: KernelErrorCode;
  message: string;
}

export type Reply = IHelloReply | IStatusReply | IChunkReply | IDoneReply | IErrorReply;

/** What each request's promise resolves to. */
export interface IResultMap {
  hello: IHelloReply;
  status: IEngineStatus;
  load: { status: IEngineStatus };
  unload: { status: IEngineStatus };
  chat: IGenerationResult;
  explain: IGenerationResult;
  fix: IGenerationResult;
  complete: IGenerationResult & { from_suggestion?: boolean; status?: IEngineStatus };
  prewarm: IGenerationResult;
  cancel: { target_id: string; cancelled: boolean };
  'context-preview': { preview: IContextPreview };
}

/** True when `data` looks like a reply of this protocol (comm data is untyped JSON). */
export function isReply(data: unknown): data is Reply {
  if (typeof data !== 'object' || data === null) {
    return false;
  }
  const type = (data as { type?: unknown }).type;
  return (
    type === 'hello' ||
    type === 'status' ||
    type === 'chunk' ||
    type === 'done' ||
    type === 'error'
  );
}

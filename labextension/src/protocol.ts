/**
 * The `jupyter_codellama` comm protocol. Its one definition is
 * `jupyter_codellama/protocol.schema.json`: the kernel validates every request with it, and
 * `protocol.generated.ts` (the types, the version, the comm target) is generated from it by
 * `scripts/gen_protocol_ts.py`. This file adds only what the front end needs on top.
 *
 * Every request is `{type, request_id, ...}`. Replies carry the same `request_id` and are
 * `chunk` (a text delta), `done` (the final result), `error`, or, for `hello` and `status`,
 * a message of that type. The kernel also broadcasts `status` with `request_id: null`
 * whenever the engine's state or load progress changes.
 *
 * Every request ends with exactly one `done`, `error`, `hello` or `status` reply. A field
 * larger than the kernel accepts (`FIELD_LIMITS` in comm.py) or against the schema is refused
 * with `bad_request`; a request without a usable `request_id` (a non-empty string of at most
 * 200 characters) gets an `error` with `request_id: null`.
 */
import { REPLY_TYPES } from './protocol.generated';
import type {
  IRequestMap,
  KernelErrorCode,
  Reply,
  RequestType
} from './protocol.generated';

export * from './protocol.generated';

/** What the front end runs (silently) when the kernel has not loaded the extension. */
export const LOAD_EXTENSION_CODE = '%load_ext jupyter_codellama';

/** Codes the front end adds for failures of the link itself. */
export type LinkErrorCode =
  | 'kernel_busy'
  | 'timeout'
  | 'no_kernel'
  | 'extension_missing'
  | 'kernel_restarted'
  | 'disconnected';

export type ErrorCode = KernelErrorCode | LinkErrorCode;

export type Request<T extends RequestType = RequestType> = IRequestMap[T] & {
  type: T;
  request_id: string;
};

/** True when `data` looks like a reply of this protocol (comm data is untyped JSON). */
export function isReply(data: unknown): data is Reply {
  if (typeof data !== 'object' || data === null) {
    return false;
  }
  const type = (data as { type?: unknown }).type;
  return (REPLY_TYPES as readonly unknown[]).includes(type);
}

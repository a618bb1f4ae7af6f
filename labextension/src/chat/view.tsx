/**
 * The sidebar's React view: link and model status, the conversation, context chips and preview,
 * and the question box. It renders a `ChatSidebarModel` and calls its methods; nothing else.
 */
import type { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import * as React from 'react';

import type { LinkState } from '../client';
import { CONTEXT_KEYS, ContextKey } from '../context';
import type { IEngineStatus } from '../protocol';
import { MarkdownView } from './markdown';
import type { IChatEntry } from './model';
import type { ChatSidebarModel, ICodeActions } from './sidebarmodel';

export const CONTEXT_LABELS: Record<
  ContextKey,
  { label: string; title: string }
> = {
  activeCell: {
    label: 'Active cell',
    title: 'Send the active cell and its outputs'
  },
  selection: {
    label: 'Selection',
    title: 'Quote the text selected in the active cell'
  },
  notebook: {
    label: 'Notebook',
    title: 'Send every cell (the kernel keeps what fits)'
  },
  variables: {
    label: 'Variables',
    title: "Describe the kernel's live variables"
  },
  lastError: {
    label: 'Last error',
    title: 'Send the cell that raised last, with its traceback'
  }
};

export interface IChatViewProps {
  model: ChatSidebarModel;
  rendermime: IRenderMimeRegistry;
}

/**
 * Re-render on every `changed` of the model (streamed chunks included). Subscribed in the
 * commit phase (a layout effect), so no change between the first render and a passive effect
 * is missed.
 */
function useModel(model: ChatSidebarModel): number {
  const [tick, setTick] = React.useState(0);
  React.useLayoutEffect(() => {
    const bump = () => setTick(t => t + 1);
    model.changed.connect(bump);
    return () => {
      model.changed.disconnect(bump);
    };
  }, [model]);
  return tick;
}

export function ChatView({ model, rendermime }: IChatViewProps): JSX.Element {
  useModel(model);
  const target = model.target;
  const client = model.client;
  const chat = model.chat;
  if (!target || !chat) {
    return (
      <div className="jp-CodeLlama-chat">
        <Header model={model} />
        <p className="jp-CodeLlama-empty">
          Open a notebook to chat about it with Code Llama.
        </p>
      </div>
    );
  }
  const state: LinkState = client?.state ?? 'no-kernel';
  return (
    <div className="jp-CodeLlama-chat" data-link-state={state}>
      <Header model={model} />
      <LinkBanner model={model} state={state} />
      {state === 'ready' && (
        <ModelStatus model={model} status={client?.status ?? null} />
      )}
      <Messages
        entries={chat.messages}
        rendermime={rendermime}
        actions={target.actions}
      />
      <ContextBar model={model} />
      <Preview model={model} />
      <Composer model={model} />
    </div>
  );
}

function Header({ model }: { model: ChatSidebarModel }): JSX.Element {
  const chat = model.chat;
  return (
    <div className="jp-CodeLlama-header">
      <h2 className="jp-CodeLlama-title">
        Code Llama
        {model.target && (
          <span className="jp-CodeLlama-notebook"> · {model.target.label}</span>
        )}
      </h2>
      <button
        type="button"
        className="jp-CodeLlama-button jp-mod-styled"
        title="Start a new conversation about this notebook"
        disabled={!chat || chat.messages.length === 0}
        onClick={() => chat?.clear()}
      >
        New chat
      </button>
    </div>
  );
}

function LinkBanner({
  model,
  state
}: {
  model: ChatSidebarModel;
  state: LinkState;
}): JSX.Element | null {
  const client = model.client;
  const message = client?.message ?? '';
  switch (state) {
    case 'ready':
      return null;
    case 'extension-missing':
      return (
        <div className="jp-CodeLlama-banner" role="status">
          <p>{message}</p>
          <button
            type="button"
            className="jp-CodeLlama-button jp-mod-styled jp-mod-accept"
            onClick={() => void model.loadExtension()}
          >
            Load jupyter-codellama in the kernel
          </button>
        </div>
      );
    case 'connecting':
      return (
        <div className="jp-CodeLlama-banner" role="status">
          <p>{message || 'Connecting to the kernel…'}</p>
        </div>
      );
    case 'kernel-busy':
      return (
        <div className="jp-CodeLlama-banner jp-mod-warning" role="status">
          <p>Kernel busy. {message}</p>
          <button
            type="button"
            className="jp-CodeLlama-button jp-mod-styled"
            onClick={() => void client?.connect()}
          >
            Retry
          </button>
        </div>
      );
    default:
      return (
        <div className="jp-CodeLlama-banner jp-mod-warning" role="status">
          <p>{message || 'No kernel.'}</p>
          {state === 'incompatible' ? null : (
            <button
              type="button"
              className="jp-CodeLlama-button jp-mod-styled"
              onClick={() => void client?.connect()}
            >
              Reconnect
            </button>
          )}
        </div>
      );
  }
}

export function describeStatus(status: IEngineStatus | null): string {
  if (!status) {
    return 'Model status unknown';
  }
  switch (status.state) {
    case 'unloaded':
      return 'Model not loaded';
    case 'loading':
      return `Loading ${status.model ?? 'the model'}…`;
    case 'error':
      return 'The model failed to load';
    case 'ready': {
      const entries = Object.entries(status.memory ?? {});
      const memory =
        entries.length === 1 && entries[0][0] === status.device
          ? entries[0][1]
          : entries.map(([device, size]) => `${size} on ${device}`).join(', ');
      return [status.model, status.quantization, status.device, memory]
        .filter(Boolean)
        .join(' · ');
    }
  }
}

/** The recent inline completion latency, e.g. "Inline completion: 95 ms median (p95 240 ms, 20)". */
export function describeLatency(status: IEngineStatus | null): string {
  const latency = status?.completion_latency_ms;
  if (!latency || !latency.n) {
    return '';
  }
  return `Inline completion: ${Math.round(latency.p50)} ms median (p95 ${Math.round(latency.p95)} ms, last ${latency.n})`;
}

function ModelStatus({
  model,
  status
}: {
  model: ChatSidebarModel;
  status: IEngineStatus | null;
}): JSX.Element {
  const models = model.models;
  const selected = model.selectedModel;
  const state = status?.state ?? 'unloaded';
  const progress = status?.progress;
  const loadLabel =
    state === 'ready' && status?.model === selected
      ? 'Reload'
      : state === 'ready'
        ? 'Switch'
        : 'Load';
  return (
    <div className="jp-CodeLlama-status" data-state={state}>
      <div className="jp-CodeLlama-statusLine">
        <span
          className={`jp-CodeLlama-dot jp-mod-${state}`}
          aria-hidden="true"
        />
        <span className="jp-CodeLlama-statusText">
          {describeStatus(status)}
        </span>
      </div>
      {state === 'ready' && status?.completion_latency_ms && (
        <div
          className="jp-CodeLlama-latency"
          title="Time to first token of recent inline completions"
        >
          {describeLatency(status)}
        </div>
      )}
      {state === 'loading' && (
        <div className="jp-CodeLlama-progress">
          <progress
            max={1}
            value={progress?.fraction ?? 0}
            aria-label="Model loading progress"
          />
          <span className="jp-CodeLlama-progressStage">
            {progress?.stage ?? ''}
          </span>
        </div>
      )}
      {state === 'error' && status?.error && (
        <p className="jp-CodeLlama-error">{status.error}</p>
      )}
      {model.loadError && state !== 'error' && (
        <p className="jp-CodeLlama-error">{model.loadError}</p>
      )}
      <div className="jp-CodeLlama-modelPicker">
        <label>
          <span className="jp-CodeLlama-label">Model</span>
          <select
            className="jp-mod-styled"
            aria-label="Model"
            value={selected}
            onChange={e => {
              model.selectedModel = e.currentTarget.value;
            }}
          >
            {selected === '' && <option value="">kernel default</option>}
            {models.map(m => (
              <option
                key={m.name}
                value={m.name}
                title={m.description ?? m.repo_id}
              >
                {m.name}
                {m.family === 'codellama' && m.nf4_gb
                  ? ` (≈${m.nf4_gb} GB in 4-bit)`
                  : ''}
              </option>
            ))}
          </select>
        </label>
        <button
          type="button"
          className="jp-CodeLlama-button jp-mod-styled jp-mod-accept"
          disabled={state === 'loading'}
          onClick={() => void model.loadModel()}
        >
          {loadLabel}
        </button>
      </div>
    </div>
  );
}

function Messages({
  entries,
  rendermime,
  actions
}: {
  entries: readonly IChatEntry[];
  rendermime: IRenderMimeRegistry;
  actions: ICodeActions;
}): JSX.Element {
  const end = React.useRef<HTMLDivElement>(null);
  const last = entries[entries.length - 1];
  React.useEffect(() => {
    end.current?.scrollIntoView?.({ block: 'end' });
  }, [entries.length, last?.content.length]);
  return (
    <div
      className="jp-CodeLlama-messages"
      role="log"
      aria-live="polite"
      aria-label="Conversation"
    >
      {entries.length === 0 && (
        <p className="jp-CodeLlama-empty">
          Ask about this notebook: the model runs in its kernel and can see its
          cells, outputs, errors and variables.
        </p>
      )}
      {entries.map(entry => (
        <Message
          key={entry.id}
          entry={entry}
          rendermime={rendermime}
          actions={actions}
        />
      ))}
      <div ref={end} />
    </div>
  );
}

function Message({
  entry,
  rendermime,
  actions
}: {
  entry: IChatEntry;
  rendermime: IRenderMimeRegistry;
  actions: ICodeActions;
}): JSX.Element {
  if (entry.role === 'user') {
    return (
      <div className="jp-CodeLlama-message jp-mod-user">
        <div className="jp-CodeLlama-userText">{entry.content}</div>
        {entry.context && entry.context.length > 0 && (
          <div className="jp-CodeLlama-sentContext">
            with {entry.context.join(', ')}
          </div>
        )}
      </div>
    );
  }
  return (
    <div
      className="jp-CodeLlama-message jp-mod-assistant"
      data-state={entry.state}
    >
      {(entry.content || entry.state !== 'error') && (
        <Markdown
          text={entry.content}
          final={entry.state !== 'streaming'}
          rendermime={rendermime}
          actions={actions}
        />
      )}
      {entry.state === 'streaming' && !entry.content && (
        <div className="jp-CodeLlama-thinking">Thinking…</div>
      )}
      {entry.state === 'cancelled' && (
        <div className="jp-CodeLlama-note">Stopped.</div>
      )}
      {entry.state === 'error' && (
        <div className="jp-CodeLlama-error" role="alert">
          {entry.error}
        </div>
      )}
      {entry.state === 'done' && entry.stats && (
        <div className="jp-CodeLlama-note">
          {entry.stats.generatedTokens} tokens
          {entry.stats.tokensPerS
            ? ` · ${entry.stats.tokensPerS.toFixed(1)} tok/s`
            : ''}
        </div>
      )}
    </div>
  );
}

function Markdown({
  text,
  final,
  rendermime,
  actions
}: {
  text: string;
  final: boolean;
  rendermime: IRenderMimeRegistry;
  actions: ICodeActions;
}): JSX.Element {
  const host = React.useRef<HTMLDivElement>(null);
  const view = React.useRef<MarkdownView | null>(null);
  React.useLayoutEffect(() => {
    view.current = new MarkdownView({ host: host.current!, rendermime });
    return () => {
      view.current?.dispose();
      view.current = null;
    };
  }, [rendermime]);
  React.useLayoutEffect(() => {
    void view.current?.update(text, final, final ? actions : null);
  }, [text, final, actions]);
  return <div className="jp-CodeLlama-answer" ref={host} />;
}

function ContextBar({ model }: { model: ChatSidebarModel }): JSX.Element {
  return (
    <div className="jp-CodeLlama-contextBar">
      <div
        className="jp-CodeLlama-chips"
        role="group"
        aria-label="Context sent with the question"
      >
        {CONTEXT_KEYS.map(key => (
          <button
            key={key}
            type="button"
            className="jp-CodeLlama-chip"
            aria-pressed={model.context[key]}
            title={CONTEXT_LABELS[key].title}
            onClick={() => model.toggleContext(key)}
          >
            {CONTEXT_LABELS[key].label}
          </button>
        ))}
      </div>
      <button
        type="button"
        className="jp-CodeLlama-linkButton"
        aria-expanded={!!model.preview.preview || !!model.preview.error}
        onClick={() =>
          model.preview.preview || model.preview.error
            ? model.closePreview()
            : void model.refreshPreview()
        }
      >
        {model.preview.preview || model.preview.error
          ? 'Hide context'
          : 'Preview context'}
      </button>
    </div>
  );
}

function Preview({ model }: { model: ChatSidebarModel }): JSX.Element | null {
  const { loading, preview, error } = model.preview;
  if (loading && !preview) {
    return <div className="jp-CodeLlama-preview">Building the prompt…</div>;
  }
  if (error) {
    return (
      <div className="jp-CodeLlama-preview jp-CodeLlama-error" role="status">
        {error}
      </div>
    );
  }
  if (!preview) {
    return null;
  }
  return (
    <div className="jp-CodeLlama-preview" aria-label="Context preview">
      <div className="jp-CodeLlama-previewSummary">
        {preview.tokens} prompt tokens of a {preview.window}-token window
        (context {preview.used} of {preview.budget})
      </div>
      {preview.included.length > 0 && (
        <div className="jp-CodeLlama-previewItems">
          Included:{' '}
          {preview.included
            .map(
              i => `${i.label} (${i.tokens}${i.truncated ? ', truncated' : ''})`
            )
            .join(', ')}
        </div>
      )}
      {preview.cut.length > 0 && (
        <div className="jp-CodeLlama-previewItems jp-mod-cut">
          Left out:{' '}
          {preview.cut.map(i => `${i.label} (${i.tokens})`).join(', ')}
        </div>
      )}
      {preview.notes.map(note => (
        <div key={note} className="jp-CodeLlama-note">
          {note}
        </div>
      ))}
      <pre className="jp-CodeLlama-previewText">{preview.text}</pre>
    </div>
  );
}

function Composer({ model }: { model: ChatSidebarModel }): JSX.Element {
  const chat = model.chat!;
  const busy = chat.busy;
  const send = () => {
    const question = chat.draft;
    if (!question.trim() || busy) {
      return;
    }
    chat.draft = '';
    void model.ask(question);
  };
  return (
    <div className="jp-CodeLlama-composer">
      <textarea
        className="jp-CodeLlama-input jp-mod-styled"
        aria-label="Ask Code Llama"
        placeholder="Ask about this notebook (Enter to send, Shift+Enter for a new line)"
        rows={3}
        value={chat.draft}
        onChange={e => {
          chat.draft = e.currentTarget.value;
        }}
        onKeyDown={e => {
          if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
            e.preventDefault();
            send();
          }
        }}
      />
      {busy ? (
        <button
          type="button"
          className="jp-CodeLlama-button jp-mod-styled jp-mod-warn"
          onClick={() => chat.stop()}
        >
          Stop
        </button>
      ) : (
        <button
          type="button"
          className="jp-CodeLlama-button jp-mod-styled jp-mod-accept"
          disabled={!chat.draft.trim()}
          onClick={send}
        >
          Send
        </button>
      )}
    </div>
  );
}

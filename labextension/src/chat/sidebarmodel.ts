/**
 * The sidebar's state: which notebook it follows, that notebook's conversation and kernel link,
 * the context chips, the model picker and the context preview.
 */
import type { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { CodeLlamaClient, CodeLlamaError } from '../client';
import {
  DEFAULT_CONTEXT,
  IContextOptions,
  ContextKey,
  INotebookSnapshot
} from '../context';
import type { ChatTask, IContextPreview, IModelSpec } from '../protocol';
import {
  ChatModel,
  DEFAULT_CHAT_SETTINGS,
  IChatEntry,
  IChatSettings
} from './model';

/** What the sidebar does to the notebook with a code block of an answer. */
export interface ICodeActions {
  insertBelow(code: string): void;
  replaceActive(code: string): void;
  insertAndRun(code: string): Promise<void>;
  copy(code: string): void;
}

/** A notebook the sidebar can talk about (a `NotebookPanel` in the app, a fake in the tests). */
export interface IChatTarget {
  /** Stable while the notebook is open. */
  readonly id: string;
  /** Where its conversation is saved. */
  readonly path: string;
  readonly label: string;
  readonly client: CodeLlamaClient | null;
  readonly actions: ICodeActions;
  snapshot(): INotebookSnapshot | null;
}

/** Saves and restores conversations (IStateDB in the app). */
export interface IChatStore {
  load(path: string): Promise<IChatEntry[] | null>;
  save(path: string, entries: IChatEntry[]): Promise<void>;
}

export interface ISidebarSettings extends IChatSettings {
  /** The model the picker starts on ('' for the kernel's default). */
  defaultModel: string;
  context: IContextOptions;
}

export const DEFAULT_SIDEBAR_SETTINGS: ISidebarSettings = {
  ...DEFAULT_CHAT_SETTINGS,
  defaultModel: '',
  context: { ...DEFAULT_CONTEXT }
};

export interface IPreviewState {
  loading: boolean;
  preview: IContextPreview | null;
  error: string;
}

export class ChatSidebarModel implements IDisposable {
  constructor(options: ChatSidebarModel.IOptions = {}) {
    this._store = options.store ?? null;
    this._settings = { ...DEFAULT_SIDEBAR_SETTINGS, ...options.settings };
    this._context = { ...this._settings.context };
  }

  get target(): IChatTarget | null {
    return this._target;
  }

  /** Follow another notebook (null: none). Each keeps its own conversation. */
  set target(target: IChatTarget | null) {
    if (target === this._target) {
      return;
    }
    this._disconnectClient();
    this._target = target;
    this._preview = { loading: false, preview: null, error: '' };
    const client = target?.client ?? null;
    if (client) {
      client.stateChanged.connect(this._emit, this);
      client.statusChanged.connect(this._emit, this);
    }
    this._client = client;
    this._emit();
  }

  get client(): CodeLlamaClient | null {
    return this._client;
  }

  /** The followed notebook's conversation. */
  get chat(): ChatModel | null {
    const target = this._target;
    if (!target) {
      return null;
    }
    let chat = this._chats.get(target.id);
    if (!chat) {
      chat = new ChatModel({
        client: () => target.client,
        snapshot: () => target.snapshot(),
        settings: () => this._settings
      });
      chat.changed.connect(this._onChatChanged, this);
      chat.saveRequested.connect(
        () => void this._store?.save(target.path, chat!.toJSON())
      );
      this._chats.set(target.id, chat);
      const created = chat;
      void this._store
        ?.load(target.path)
        .then(saved => saved && created.restore(saved));
    }
    return chat;
  }

  /** Forget a closed notebook's conversation (it stays saved). */
  forget(targetId: string): void {
    const chat = this._chats.get(targetId);
    if (chat) {
      this._chats.delete(targetId);
      chat.dispose();
    }
  }

  get context(): IContextOptions {
    return this._context;
  }

  toggleContext(key: ContextKey): void {
    this._context = { ...this._context, [key]: !this._context[key] };
    this._preview = { ...this._preview, preview: null };
    this._emit();
  }

  get settings(): ISidebarSettings {
    return this._settings;
  }

  set settings(settings: ISidebarSettings) {
    const contextChanged =
      JSON.stringify(settings.context) !==
      JSON.stringify(this._settings.context);
    this._settings = settings;
    if (contextChanged) {
      this._context = { ...settings.context };
    }
    this._emit();
  }

  /** The catalogue from the kernel's hello. */
  get models(): IModelSpec[] {
    return this._client?.capabilities?.models ?? [];
  }

  /** The model the picker shows. */
  get selectedModel(): string {
    if (this._selectedModel) {
      return this._selectedModel;
    }
    const status = this._client?.status;
    return (
      (status?.state === 'ready' || status?.state === 'loading'
        ? status.model
        : undefined) ||
      this._settings.defaultModel ||
      this._client?.capabilities?.default_model ||
      ''
    );
  }

  set selectedModel(name: string) {
    this._selectedModel = name;
    this._emit();
  }

  /** Load (or switch to) the selected model. */
  async loadModel(): Promise<void> {
    const client = this._client;
    if (!client) {
      return;
    }
    const model = this.selectedModel || undefined;
    try {
      await client.request('load', model ? { model } : {}).done;
      this._loadError = '';
    } catch (error) {
      this._loadError = error instanceof Error ? error.message : String(error);
    }
    this._emit();
  }

  /** The last `load` failure that no status shows ('' when none). */
  get loadError(): string {
    return this._loadError;
  }

  async unloadModel(): Promise<void> {
    await this._client?.request('unload', {}).done.catch(() => undefined);
  }

  /** Run `%load_ext jupyter_codellama` in the kernel. */
  async loadExtension(): Promise<void> {
    await this._client?.loadExtension();
  }

  /** Ask a question about the followed notebook. */
  async ask(
    question: string,
    context?: Partial<IContextOptions>,
    task?: ChatTask
  ): Promise<void> {
    const chat = this.chat;
    if (!chat) {
      return;
    }
    if (this._client && this._client.state !== 'ready') {
      await this._client.connect();
    }
    await chat.send(
      question,
      { ...this._context, ...context },
      {
        beforeSend: () => this._ensureModel(),
        task
      }
    );
  }

  get preview(): IPreviewState {
    return this._preview;
  }

  /** Fetch what the kernel would see for the draft question. */
  async refreshPreview(): Promise<void> {
    const chat = this.chat;
    if (!chat) {
      return;
    }
    this._preview = {
      loading: true,
      preview: this._preview.preview,
      error: ''
    };
    this._emit();
    try {
      const preview = await chat.preview(chat.draft, this._context);
      this._preview = { loading: false, preview, error: '' };
    } catch (error) {
      const message =
        error instanceof CodeLlamaError && error.code === 'not_loaded'
          ? 'Load a model to preview the context: the count depends on its tokenizer.'
          : error instanceof Error
            ? error.message
            : String(error);
      this._preview = { loading: false, preview: null, error: message };
    }
    this._emit();
  }

  closePreview(): void {
    this._preview = { loading: false, preview: null, error: '' };
    this._emit();
  }

  /** Emitted on any change the view shows. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._disconnectClient();
    for (const chat of this._chats.values()) {
      chat.dispose();
    }
    this._chats.clear();
    Signal.clearData(this);
  }

  /** A picked model that is not the one loaded gets loaded before the question is sent. */
  private async _ensureModel(): Promise<void> {
    const client = this._client;
    const picked = this._selectedModel || this._settings.defaultModel;
    if (!client || !picked) {
      return;
    }
    const status = client.status;
    const loaded = status?.state === 'ready' || status?.state === 'loading';
    if (loaded && status?.model === picked) {
      return;
    }
    if (loaded && !this._selectedModel) {
      return; // the settings' default never replaces a model the user loaded
    }
    await client.request('load', { model: picked }).done;
  }

  private _onChatChanged(chat: ChatModel): void {
    if (this._target && this._chats.get(this._target.id) === chat) {
      this._emit();
    }
  }

  private _disconnectClient(): void {
    if (this._client) {
      this._client.stateChanged.disconnect(this._emit, this);
      this._client.statusChanged.disconnect(this._emit, this);
    }
    this._client = null;
  }

  private _emit(): void {
    this._changed.emit();
  }

  private _target: IChatTarget | null = null;
  private _client: CodeLlamaClient | null = null;
  private _chats = new Map<string, ChatModel>();
  private _store: IChatStore | null;
  private _settings: ISidebarSettings;
  private _context: IContextOptions;
  private _selectedModel = '';
  private _loadError = '';
  private _preview: IPreviewState = {
    loading: false,
    preview: null,
    error: ''
  };
  private _isDisposed = false;
  private _changed = new Signal<this, void>(this);
}

export namespace ChatSidebarModel {
  export interface IOptions {
    store?: IChatStore;
    settings?: Partial<ISidebarSettings>;
  }
}

/**
 * An answer rendered with JupyterLab's rendermime (its Markdown parser highlights code), with a
 * toolbar on every code block once the answer is complete.
 */
import {
  IRenderMime,
  MimeModel,
  IRenderMimeRegistry
} from '@jupyterlab/rendermime';

import { blocksMatch, IAnswerSource, parseAnswer } from './answer';
import type { ICodeActions } from './sidebarmodel';

const MARKDOWN = 'text/markdown';

export class MarkdownView {
  constructor(options: MarkdownView.IOptions) {
    this.node = options.host;
    this._renderer = options.rendermime.createRenderer(MARKDOWN);
    this._renderer.addClass('jp-CodeLlama-markdown');
    this.node.appendChild(this._renderer.node);
  }

  readonly node: HTMLElement;

  /**
   * Render `text`. Calls during a stream coalesce: at most one render runs at a time and the
   * latest text wins.
   */
  update(
    text: string,
    final: boolean,
    actions: ICodeActions | null
  ): Promise<void> {
    this._next = { text, final, actions };
    if (!this._running) {
      this._running = this._drain().finally(() => {
        this._running = null;
      });
    }
    return this._running;
  }

  dispose(): void {
    this._disposed = true;
    this._renderer.dispose();
  }

  private async _drain(): Promise<void> {
    while (this._next && !this._disposed) {
      const { text, final, actions } = this._next;
      this._next = null;
      const answer = parseAnswer(text);
      const model = new MimeModel({
        data: { [MARKDOWN]: answer.markdown },
        trusted: false
      });
      await this._renderer.renderModel(model);
      if (final && actions && !this._disposed) {
        decorateCodeBlocks(this._renderer.node, answer, actions);
      }
    }
  }

  private _renderer: IRenderMime.IRenderer;
  private _next: {
    text: string;
    final: boolean;
    actions: ICodeActions | null;
  } | null = null;
  private _running: Promise<void> | null = null;
  private _disposed = false;
}

export namespace MarkdownView {
  export interface IOptions {
    host: HTMLElement;
    rendermime: IRenderMimeRegistry;
  }
}

/**
 * Add Insert below / Replace / Copy / Insert and run buttons after every `<pre>` block. The code
 * comes from the answer's fenced blocks; when the rendered blocks are not exactly those, no block
 * gets buttons and a note says why.
 */
export function decorateCodeBlocks(
  root: HTMLElement,
  answer: IAnswerSource,
  actions: ICodeActions
): void {
  const pres = Array.from(root.querySelectorAll('pre'));
  if (!blocksMatch(pres, answer)) {
    if (pres.length > 0 || answer.blocks.length > 0) {
      root.appendChild(Private.unmatchedNote());
    }
    return;
  }
  pres.forEach((pre, i) =>
    pre.insertAdjacentElement(
      'afterend',
      Private.toolbar(answer.blocks[i], actions)
    )
  );
}

namespace Private {
  export function toolbar(code: string, actions: ICodeActions): HTMLElement {
    const bar = document.createElement('div');
    bar.className = 'jp-CodeLlama-codeActions';
    bar.setAttribute('role', 'toolbar');
    bar.setAttribute('aria-label', 'Code block actions');
    const button = (label: string, title: string, run: () => unknown) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'jp-CodeLlama-codeAction jp-mod-styled';
      b.textContent = label;
      b.title = title;
      b.addEventListener('click', () => void run());
      bar.appendChild(b);
    };
    button(
      'Insert below',
      'Insert this code in a new cell below the active cell',
      () => actions.insertBelow(code)
    );
    button('Replace', "Replace the active cell's code with this code", () =>
      actions.replaceActive(code)
    );
    button('Copy', 'Copy this code to the clipboard', () => actions.copy(code));
    button(
      'Insert and run',
      'Insert this code below the active cell and run it',
      () => actions.insertAndRun(code)
    );
    return bar;
  }

  export function unmatchedNote(): HTMLElement {
    const note = document.createElement('div');
    note.className = 'jp-CodeLlama-note jp-CodeLlama-codeNote';
    note.textContent =
      'No Insert or Run buttons on this answer: it holds HTML or code outside plain ``` blocks, ' +
      'so the code a button would insert could differ from the code shown. Select the code to copy it.';
    return note;
  }
}

import type { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import type { ChatSidebarModel } from './sidebarmodel';
import { ChatView } from './view';

/** The sidebar widget: owns the model's lifetime and renders `ChatView`. */
export class ChatPanel extends ReactWidget {
  constructor(options: ChatPanel.IOptions) {
    super();
    this.model = options.model;
    this._rendermime = options.rendermime;
    this.addClass('jp-CodeLlama-panel');
  }

  readonly model: ChatSidebarModel;

  /** Put the focus in the question box. */
  focusInput(): void {
    this.node
      .querySelector<HTMLTextAreaElement>('.jp-CodeLlama-input')
      ?.focus();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this.model.dispose();
    super.dispose();
  }

  protected render(): JSX.Element {
    return <ChatView model={this.model} rendermime={this._rendermime} />;
  }

  private _rendermime: IRenderMimeRegistry;
}

export namespace ChatPanel {
  export interface IOptions {
    model: ChatSidebarModel;
    rendermime: IRenderMimeRegistry;
  }
}

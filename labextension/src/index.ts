/**
 * jupyter-codellama's JupyterLab extension: one plugin per feature.
 *
 * - `client`: the kernel link (`ICodeLlamaClient`), one comm per notebook kernel;
 * - `chat`: the sidebar (`ICodeLlamaChat`);
 * - `commands`: Explain / Fix / Generate / Ask about the selection;
 * - `edit`: Edit Cell with Code Llama…, a cell rewritten by instruction, reviewed as a diff;
 * - `inline`: ghost-text completion while typing (`CodeLlamaInlineProvider`).
 */
import type { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { chatPlugin } from './chatplugin';
import { clientPlugin } from './clientplugin';
import { commandsPlugin } from './commands';
import { editPlugin } from './editplugin';
import { inlinePlugin } from './inlineplugin';

export * from './client';
export * from './protocol';
export * from './tokens';
export * from './inline/provider';
export * from './inline/triggers';

const plugins: JupyterFrontEndPlugin<any>[] = [
  clientPlugin,
  chatPlugin,
  commandsPlugin,
  editPlugin,
  inlinePlugin
];

export default plugins;

/**
 * jupyter-codellama's JupyterLab extension: one plugin per feature.
 *
 * - `client`: the kernel link (`ICodeLlamaClient`), one comm per notebook kernel;
 * - `chat`: the sidebar (`ICodeLlamaChat`);
 * - `commands`: Explain / Fix / Generate / Ask about the selection.
 */
import type { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { chatPlugin } from './chatplugin';
import { clientPlugin } from './clientplugin';
import { commandsPlugin } from './commands';

export * from './client';
export * from './protocol';
export * from './tokens';

const plugins: JupyterFrontEndPlugin<any>[] = [clientPlugin, chatPlugin, commandsPlugin];

export default plugins;

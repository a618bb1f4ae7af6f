import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import type { ISessionContext } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

// eslint-disable-next-line jupyter/prefer-lazy-imports -- the service hands out clients synchronously
import { CodeLlamaClient } from './client';
import { ICodeLlamaClient } from './tokens';

/** Provides `ICodeLlamaClient`: one kernel link per session context. */
export const clientPlugin: JupyterFrontEndPlugin<ICodeLlamaClient> = {
  id: 'jupyter-codellama:client',
  description: 'Links each notebook kernel to jupyter-codellama over one comm.',
  autoStart: true,
  provides: ICodeLlamaClient,
  optional: [ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    settingRegistry: ISettingRegistry | null
  ): ICodeLlamaClient => {
    const clients = new Map<ISessionContext, CodeLlamaClient>();
    let options: Pick<
      CodeLlamaClient.IOptions,
      'timeouts' | 'reloadAfterRestart'
    > = {};

    const apply = (settings: ISettingRegistry.ISettings) => {
      const seconds = Number(settings.composite.replyTimeout) || 4;
      const timeouts = { reply: seconds * 1000, ping: seconds * 1000 };
      options = {
        timeouts,
        reloadAfterRestart: settings.composite.reloadAfterRestart !== false
      };
      for (const client of clients.values()) {
        client.setTimeouts(timeouts);
        client.reloadAfterRestart = options.reloadAfterRestart!;
      }
    };
    if (settingRegistry) {
      void settingRegistry.load(clientPlugin.id).then(settings => {
        apply(settings);
        settings.changed.connect(apply);
      });
    }

    return {
      forSession(sessionContext: ISessionContext): CodeLlamaClient {
        let client = clients.get(sessionContext);
        if (!client) {
          client = new CodeLlamaClient({ sessionContext, ...options });
          clients.set(sessionContext, client);
          const created = client;
          sessionContext.disposed.connect(() => {
            clients.delete(sessionContext);
            created.dispose();
          });
        }
        return client;
      }
    };
  }
};

import { PromiseDelegate } from '@lumino/coreutils';

import { CodeLlamaError } from '../src/client';
import { READY } from './fakes';
import { FakeKernel, makeClient, until } from './fakes';

describe('CodeLlamaClient', () => {
  describe('connecting', () => {
    it('says hello over the jupyter_codellama comm and keeps what the kernel reports', async () => {
      const { client, kernel } = makeClient(new FakeKernel({ status: READY }));
      expect(await client.connect()).toBe('ready');
      expect(kernel.comm.targetName).toBe('jupyter_codellama');
      expect(kernel.comm.sent[0]).toMatchObject({
        type: 'hello',
        protocol_version: 1
      });
      expect(client.status?.model).toBe('embedded');
      expect(client.capabilities?.models.map(m => m.name)).toEqual([
        'embedded',
        '7b-instruct'
      ]);
      expect(client.kernelVersion).toBe('0.1.0');
    });

    it('reports a kernel without the extension, and loads it on request', async () => {
      const { client, kernel } = makeClient(
        new FakeKernel({ behaviour: 'missing' })
      );
      expect(await client.connect()).toBe('extension-missing');
      expect(client.message).toContain('%load_ext jupyter_codellama');

      expect(await client.loadExtension()).toBe('ready');
      expect(kernel.executed).toEqual([
        { code: '%load_ext jupyter_codellama', silent: true }
      ]);
    });

    it('reports a kernel that speaks another protocol version', async () => {
      const kernel = new FakeKernel();
      kernel.protocolVersion = 2;
      const { client } = makeClient(kernel);
      expect(await client.connect()).toBe('incompatible');
      expect(client.message).toContain('speaks 2');
    });

    it('says the kernel is busy when a cell holds a kernel without subshells, and retries when it is idle', async () => {
      const kernel = new FakeKernel({ behaviour: 'silent' });
      kernel.status = 'busy';
      const { client } = makeClient(kernel);
      expect(await client.connect()).toBe('kernel-busy');

      kernel.behaviour = 'extension';
      kernel.setStatus('idle');
      await until(() => client.state === 'ready');
    });

    it('has no kernel to talk to when the session has none', async () => {
      const { client } = makeClient(null);
      expect(client.state).toBe('no-kernel');
      const request = client.request('status', {});
      await expect(request.done).rejects.toMatchObject({ code: 'no_kernel' });
    });

    it('waits for the comm subshell before opening the comm, where the kernel has subshells', async () => {
      const kernel = new FakeKernel({ subshells: true });
      kernel.subshell = new PromiseDelegate<void>();
      const { client } = makeClient(kernel);
      await until(() => kernel.comms.length === 1);
      expect(kernel.comm.opened).toBe(false);
      kernel.subshell.resolve();
      await until(() => client.state === 'ready');
      expect(kernel.comm.openedBeforeSubshell).toBe(false);
      expect(client.usesSubshell).toBe(true);
    });
  });

  describe('requests', () => {
    it('streams chunks in order and resolves with the done reply', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      const chunks: string[] = [];
      const request = client.request(
        'chat',
        { messages: [{ role: 'user', content: 'hi' }] },
        {
          onChunk: text => chunks.push(text)
        }
      );
      const sent = kernel.comm.requests('chat')[0];
      expect(sent).toMatchObject({
        type: 'chat',
        request_id: request.requestId,
        messages: [{ role: 'user', content: 'hi' }]
      });

      for (const text of ['Hel', 'lo', ' world']) {
        kernel.comm.reply({
          type: 'chunk',
          request_id: request.requestId,
          text
        });
      }
      kernel.comm.reply({
        type: 'done',
        request_id: request.requestId,
        text: 'Hello world',
        stop_reason: 'eos',
        prompt_tokens: 12,
        cached_tokens: 0,
        generated_tokens: 3,
        tokens_evaluated: 12,
        timings: { tokens_per_s: 15 }
      });
      const result = await request.done;
      expect(chunks).toEqual(['Hel', 'lo', ' world']);
      expect(result.text).toBe('Hello world');
      expect(result.stop_reason).toBe('eos');
    });

    it('routes interleaved replies by request id', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      const a: string[] = [];
      const b: string[] = [];
      const first = client.request(
        'chat',
        { messages: [{ role: 'user', content: 'a' }] },
        { onChunk: t => a.push(t) }
      );
      const second = client.request(
        'complete',
        { prefix: 'x = ' },
        { onChunk: t => b.push(t) }
      );
      kernel.comm.reply({
        type: 'chunk',
        request_id: second.requestId,
        text: '1'
      });
      kernel.comm.reply({
        type: 'chunk',
        request_id: first.requestId,
        text: 'A'
      });
      kernel.comm.reply({
        type: 'chunk',
        request_id: 'someone-else',
        text: '?'
      });
      kernel.comm.reply({
        type: 'done',
        request_id: second.requestId,
        text: '1',
        stop_reason: 'stop'
      });
      expect((await second.done).text).toBe('1');
      kernel.comm.reply({
        type: 'done',
        request_id: first.requestId,
        text: 'A',
        stop_reason: 'eos'
      });
      expect((await first.done).text).toBe('A');
      expect(a).toEqual(['A']);
      expect(b).toEqual(['1']);
    });

    it('rejects with the kernel error code and message', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      const request = client.request('context-preview', {
        messages: [{ role: 'user', content: 'q' }]
      });
      kernel.comm.reply({
        type: 'error',
        request_id: request.requestId,
        code: 'not_loaded',
        message: 'Load a model first.'
      });
      const error = await request.done.catch(e => e);
      expect(error).toBeInstanceOf(CodeLlamaError);
      expect(error.code).toBe('not_loaded');
      expect(error.message).toBe('Load a model first.');
    });

    it('sends cancel with the target id', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      const request = client.request('chat', {
        messages: [{ role: 'user', content: 'q' }]
      });
      request.cancel();
      expect(kernel.comm.requests('cancel')[0]).toMatchObject({
        target_id: request.requestId
      });
      kernel.comm.reply({
        type: 'done',
        request_id: request.requestId,
        text: 'partial',
        stop_reason: 'cancelled'
      });
      expect((await request.done).stop_reason).toBe('cancelled');
    });

    it('follows unsolicited status broadcasts', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      const seen: (string | undefined)[] = [];
      client.statusChanged.connect((_, status) => seen.push(status?.state));
      kernel.comm.reply({
        type: 'status',
        request_id: null,
        status: {
          state: 'loading',
          busy: true,
          queued: 0,
          progress: { stage: 'weights', fraction: 0.5 }
        }
      });
      kernel.comm.reply({ type: 'status', request_id: null, status: READY });
      expect(seen).toEqual(['loading', 'ready']);
      expect(client.status?.model).toBe('embedded');
    });

    it('takes the status from a load reply', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      const request = client.request('load', { model: 'embedded' });
      expect(kernel.comm.requests('load')[0]).toMatchObject({
        model: 'embedded'
      });
      kernel.comm.reply({
        type: 'done',
        request_id: request.requestId,
        status: READY
      });
      expect((await request.done).status.state).toBe('ready');
      expect(client.status?.state).toBe('ready');
    });
  });

  describe('timeouts', () => {
    it('keeps waiting while the kernel answers pings', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      const request = client.request('chat', {
        messages: [{ role: 'user', content: 'q' }]
      });
      await until(() => kernel.comm.requests('status').length >= 2, 1000);
      kernel.comm.reply({
        type: 'done',
        request_id: request.requestId,
        text: 'late',
        stop_reason: 'eos'
      });
      expect((await request.done).text).toBe('late');
    });

    it('fails with kernel_busy when a running cell holds the kernel, and cancels the request', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      kernel.behaviour = 'silent';
      kernel.status = 'busy';
      const request = client.request('chat', {
        messages: [{ role: 'user', content: 'q' }]
      });
      const error = await request.done.catch(e => e);
      expect(error.code).toBe('kernel_busy');
      expect(error.message).toContain('busy');
      // When the cell ends, the kernel must not start the stale request.
      expect(kernel.comm.requests('cancel')[0]).toMatchObject({
        target_id: request.requestId
      });
    });

    it('fails with timeout when an idle kernel does not answer', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      kernel.behaviour = 'silent';
      const error = await client
        .request('chat', { messages: [{ role: 'user', content: 'q' }] })
        .done.catch(e => e);
      expect(error.code).toBe('timeout');
    });

    it('stops the watchdog at the first chunk', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      kernel.answerPings = false;
      const request = client.request('chat', {
        messages: [{ role: 'user', content: 'q' }]
      });
      kernel.comm.reply({
        type: 'chunk',
        request_id: request.requestId,
        text: 'a'
      });
      await new Promise(resolve => setTimeout(resolve, 150));
      kernel.comm.reply({
        type: 'done',
        request_id: request.requestId,
        text: 'ab',
        stop_reason: 'eos'
      });
      expect((await request.done).text).toBe('ab');
    });
  });

  describe('restarts and kernel changes', () => {
    it('fails pending requests on restart, then reloads the extension and reconnects', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      const first = kernel.comm;
      const request = client.request('chat', {
        messages: [{ role: 'user', content: 'q' }]
      });
      const states: string[] = [];
      client.stateChanged.connect((_, state) => states.push(state));

      await kernel.restart();
      await expect(request.done).rejects.toMatchObject({
        code: 'kernel_restarted'
      });
      await until(() => client.state === 'ready');
      expect(kernel.executed.map(e => e.code)).toEqual([
        '%load_ext jupyter_codellama'
      ]);
      expect(kernel.comm).not.toBe(first);
      expect(states[0]).toBe('connecting');
      expect(client.status?.state).toBe('unloaded');

      // And the chat goes on over the new comm.
      const again = client.request('chat', {
        messages: [{ role: 'user', content: 'q' }]
      });
      kernel.comm.reply({
        type: 'done',
        request_id: again.requestId,
        text: 'ok',
        stop_reason: 'eos'
      });
      expect((await again.done).text).toBe('ok');
    });

    it('does not load the extension after a restart when that is switched off', async () => {
      const { client, kernel } = makeClient();
      client.reloadAfterRestart = false;
      await client.connect();
      await kernel.restart();
      await until(() => client.state === 'extension-missing');
      expect(kernel.executed).toEqual([]);
    });

    it('opens a new comm on the new kernel when the kernel changes', async () => {
      const { client, session, kernel } = makeClient();
      await client.connect();
      const request = client.request('chat', {
        messages: [{ role: 'user', content: 'q' }]
      });
      const other = new FakeKernel();
      session.changeKernel(other);
      await expect(request.done).rejects.toMatchObject({
        code: 'kernel_restarted'
      });
      await until(() => client.state === 'ready');
      expect(other.comms).toHaveLength(1);
      expect(kernel.comm.isDisposed).toBe(true);
    });

    it('marks a comm closed by the kernel as a missing extension', async () => {
      const { client, kernel } = makeClient();
      await client.connect();
      const request = client.request('chat', {
        messages: [{ role: 'user', content: 'q' }]
      });
      kernel.comm.closeFromKernel();
      await expect(request.done).rejects.toMatchObject({
        code: 'disconnected'
      });
      expect(client.state).toBe('extension-missing');
    });
  });
});

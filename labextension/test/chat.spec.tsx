import { EditorLanguageRegistry } from '@jupyterlab/codemirror';
import { createMarkdownParser } from '@jupyterlab/markedparser-extension';
import {
  IRenderMime,
  RenderMimeRegistry,
  standardRendererFactories
} from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { ChatPanel } from '../src/chat/panel';
import {
  ChatSidebarModel,
  ICodeActions,
  IChatTarget
} from '../src/chat/sidebarmodel';
import type { INotebookSnapshot } from '../src/context';
import { FakeKernel, makeClient, READY, until } from './fakes';

/** A Markdown parser good enough for the tests: fenced code blocks and paragraphs. */
const markdownParser = {
  render: async (source: string): Promise<string> =>
    source
      .split(/(```[a-z]*\n[\s\S]*?```)/)
      .map(part => {
        const fence = /^```([a-z]*)\n([\s\S]*?)```$/.exec(part);
        if (fence) {
          const escaped = fence[2].replace(/&/g, '&amp;').replace(/</g, '&lt;');
          return `<pre><code class="language-${fence[1]}">${escaped}</code></pre>`;
        }
        return part.trim() ? `<p>${part.trim()}</p>` : '';
      })
      .join('')
};

/** JupyterLab's own Markdown parser (marked, with syntax highlighting), as the app uses it. */
function jupyterLabMarkdownParser(): IRenderMime.IMarkdownParser {
  const languages = new EditorLanguageRegistry();
  for (const language of EditorLanguageRegistry.getDefaultLanguages()) {
    languages.addLanguage(language);
  }
  return createMarkdownParser(languages);
}

class FakeActions implements ICodeActions {
  calls: [string, string][] = [];
  insertBelow(code: string): void {
    this.calls.push(['insertBelow', code]);
  }
  replaceActive(code: string): void {
    this.calls.push(['replaceActive', code]);
  }
  async insertAndRun(code: string): Promise<void> {
    this.calls.push(['insertAndRun', code]);
  }
  copy(code: string): void {
    this.calls.push(['copy', code]);
  }
}

const SNAPSHOT: INotebookSnapshot = {
  cells: [
    {
      cell_type: 'code',
      source: 'df = load()',
      metadata: {},
      outputs: [],
      execution_count: 1
    }
  ],
  activeIndex: 0,
  selection: ''
};

function setup(
  kernel = new FakeKernel({ status: READY }),
  parser: IRenderMime.IMarkdownParser = markdownParser
) {
  const { client } = makeClient(kernel);
  const actions = new FakeActions();
  const target: IChatTarget = {
    id: 'nb-1',
    path: 'analysis.ipynb',
    label: 'analysis.ipynb',
    client,
    actions,
    snapshot: () => SNAPSHOT
  };
  const model = new ChatSidebarModel();
  const rendermime = new RenderMimeRegistry({
    initialFactories: standardRendererFactories,
    markdownParser: parser
  });
  const panel = new ChatPanel({ model, rendermime });
  Widget.attach(panel, document.body);
  model.target = target;
  const $ = (selector: string) =>
    panel.node.querySelector(selector) as HTMLElement | null;
  const $$ = (selector: string) =>
    Array.from(panel.node.querySelectorAll(selector)) as HTMLElement[];
  const button = (label: string) =>
    $$('button').find(b => b.textContent?.trim() === label) as
      HTMLButtonElement | undefined;
  return { client, kernel, actions, model, panel, $, $$, button };
}

/** Type into the question box the way React sees it, then press Enter. */
function typeAndSend(input: HTMLTextAreaElement, text: string): void {
  const setter = Object.getOwnPropertyDescriptor(
    HTMLTextAreaElement.prototype,
    'value'
  )!.set!;
  setter.call(input, text);
  input.dispatchEvent(new Event('input', { bubbles: true }));
  input.dispatchEvent(
    new KeyboardEvent('keydown', { key: 'Enter', bubbles: true })
  );
}

/** Ask a question and let the kernel answer `text` in one piece. */
async function answer(
  kernel: FakeKernel,
  $: (selector: string) => HTMLElement | null,
  text: string
): Promise<void> {
  await until(() => !!$('.jp-CodeLlama-input'));
  const asked = kernel.comm.requests('chat').length;
  typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'Plot df');
  await until(() => kernel.comm.requests('chat').length === asked + 1);
  const request = kernel.comm.requests('chat')[asked];
  kernel.comm.reply({
    type: 'done',
    request_id: request.request_id,
    text,
    stop_reason: 'eos'
  });
  await until(
    () =>
      document.querySelectorAll(
        '.jp-CodeLlama-message.jp-mod-assistant[data-state="done"]'
      ).length ===
      asked + 1
  );
}

/** Click every code button, in order, and return what each passed to the notebook. */
async function clickAll(
  actions: FakeActions,
  $$: (selector: string) => HTMLElement[]
): Promise<[string, string][]> {
  const buttons = $$('.jp-CodeLlama-codeAction');
  buttons.forEach(b => b.click());
  await until(() => actions.calls.length === buttons.length);
  return actions.calls;
}

afterEach(() => {
  document.body.innerHTML = '';
});

describe('ChatPanel', () => {
  it('asks for a notebook when none is open', async () => {
    const model = new ChatSidebarModel();
    const rendermime = new RenderMimeRegistry({
      initialFactories: standardRendererFactories
    });
    const panel = new ChatPanel({ model, rendermime });
    Widget.attach(panel, document.body);
    await until(() => panel.node.textContent!.includes('Open a notebook'));
    panel.dispose();
  });

  it('offers to load the extension when the kernel lacks it, and then shows the model status', async () => {
    const { kernel, $, $$, button, panel } = setup(
      new FakeKernel({ behaviour: 'missing' })
    );
    await until(() => !!button('Load jupyter-codellama in the kernel'));
    button('Load jupyter-codellama in the kernel')!.click();
    await until(
      () => $('.jp-CodeLlama-statusText')?.textContent === 'Model not loaded'
    );
    expect(kernel.executed[0]).toEqual({
      code: '%load_ext jupyter_codellama',
      silent: true
    });
    const options = $$('select[aria-label="Model"] option').map(
      o => o.textContent
    );
    expect(options).toEqual([
      'kernel default',
      'embedded',
      '7b-instruct (≈3.7 GB in 4-bit)'
    ]);
    panel.dispose();
  });

  it('shows the loaded model, a progress bar while loading, and sends load for the picked model', async () => {
    const { kernel, $, button, panel } = setup();
    await until(
      () =>
        $('.jp-CodeLlama-statusText')?.textContent ===
        'embedded · none · cpu · 0.50 GiB'
    );

    const select = $('select[aria-label="Model"]') as HTMLSelectElement;
    Object.getOwnPropertyDescriptor(
      HTMLSelectElement.prototype,
      'value'
    )!.set!.call(select, '7b-instruct');
    select.dispatchEvent(new Event('change', { bubbles: true }));
    await until(() => button('Switch') !== undefined);
    button('Switch')!.click();
    expect(kernel.comm.requests('load')[0]).toMatchObject({
      model: '7b-instruct'
    });

    kernel.comm.reply({
      type: 'status',
      request_id: null,
      status: {
        state: 'loading',
        busy: true,
        queued: 0,
        model: '7b-instruct',
        progress: { stage: 'weights', fraction: 0.4 }
      }
    });
    await until(() => !!$('progress'));
    expect(($('progress') as HTMLProgressElement).value).toBeCloseTo(0.4);
    expect($('.jp-CodeLlama-progressStage')!.textContent).toBe('weights');
    panel.dispose();
  });

  it('streams the answer, then puts Insert below / Replace / Copy / Insert and run on its code', async () => {
    const { kernel, actions, $, $$, button, panel } = setup();
    await until(() => !!$('.jp-CodeLlama-input'));
    typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'Plot df');
    await until(() => kernel.comm.requests('chat').length === 1);
    const request = kernel.comm.requests('chat')[0];
    expect(request.messages).toEqual([{ role: 'user', content: 'Plot df' }]);
    expect(request.cells).toHaveLength(1);
    expect(request.current).toBe(0);
    expect(request.variables).toBe(true);
    expect(request.max_new_tokens).toBe(512);
    expect(request.temperature).toBe(0.2);

    await until(() => !!button('Stop'));
    kernel.comm.reply({
      type: 'chunk',
      request_id: request.request_id,
      text: 'Here:\n```python\n'
    });
    kernel.comm.reply({
      type: 'chunk',
      request_id: request.request_id,
      text: 'df.plot()\n```'
    });
    await until(() =>
      ($('.jp-CodeLlama-answer')?.textContent ?? '').includes('df.plot()')
    );
    expect($('.jp-CodeLlama-message.jp-mod-assistant')!.dataset.state).toBe(
      'streaming'
    );
    expect($$('.jp-CodeLlama-codeAction')).toHaveLength(0);

    kernel.comm.reply({
      type: 'done',
      request_id: request.request_id,
      text: 'Here:\n```python\ndf.plot()\n```',
      stop_reason: 'eos',
      prompt_tokens: 40,
      cached_tokens: 0,
      generated_tokens: 9,
      timings: { tokens_per_s: 15.2 }
    });
    await until(() => $$('.jp-CodeLlama-codeAction').length === 4);
    expect($('.jp-CodeLlama-message.jp-mod-assistant')!.dataset.state).toBe(
      'done'
    );
    expect(panel.node.textContent).toContain('9 tokens · 15.2 tok/s');
    for (const label of ['Insert below', 'Replace', 'Copy', 'Insert and run']) {
      button(label)!.click();
    }
    await until(() => actions.calls.length === 4);
    expect(actions.calls).toEqual([
      ['insertBelow', 'df.plot()'],
      ['replaceActive', 'df.plot()'],
      ['copy', 'df.plot()'],
      ['insertAndRun', 'df.plot()']
    ]);
    expect(button('Send')).toBeDefined();
    panel.dispose();
  });

  it('sends cancel on Stop and marks the answer stopped', async () => {
    const { kernel, $, button, panel } = setup();
    await until(() => !!$('.jp-CodeLlama-input'));
    typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'Explain');
    await until(() => !!button('Stop'));
    const request = kernel.comm.requests('chat')[0];
    kernel.comm.reply({
      type: 'chunk',
      request_id: request.request_id,
      text: 'It '
    });
    button('Stop')!.click();
    expect(kernel.comm.requests('cancel')[0]).toMatchObject({
      target_id: request.request_id
    });
    kernel.comm.reply({
      type: 'done',
      request_id: request.request_id,
      text: 'It ',
      stop_reason: 'cancelled'
    });
    await until(() => panel.node.textContent!.includes('Stopped.'));
    expect($('.jp-CodeLlama-message.jp-mod-assistant')!.dataset.state).toBe(
      'cancelled'
    );

    // A failed answer is left out of the history, so the turns still alternate.
    await until(() => !!button('Send') || !!$('.jp-CodeLlama-input'));
    typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'Fails');
    await until(() => kernel.comm.requests('chat').length === 2);
    const failing = kernel.comm.requests('chat')[1];
    kernel.comm.reply({
      type: 'error',
      request_id: failing.request_id,
      code: 'generation_failed',
      message: 'oops'
    });
    await until(() => panel.node.textContent!.includes('oops'));
    typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'Again');
    await until(() => kernel.comm.requests('chat').length === 3);
    expect(kernel.comm.requests('chat')[2].messages).toEqual([
      { role: 'user', content: 'Explain' },
      { role: 'assistant', content: 'It ' },
      { role: 'user', content: 'Again' }
    ]);
    panel.dispose();
  });

  it('shows why an answer failed (kernel busy)', async () => {
    const { kernel, $, panel } = setup();
    await until(() => !!$('.jp-CodeLlama-input'));
    kernel.behaviour = 'silent';
    kernel.status = 'busy';
    typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'Hello?');
    await until(() => !!$('.jp-CodeLlama-message [role="alert"]'), 3000);
    expect($('.jp-CodeLlama-message [role="alert"]')!.textContent).toContain(
      'busy running a cell'
    );
    panel.dispose();
  });

  it('recovers from a kernel restart mid-answer: no spinner left, and the next question is answered', async () => {
    const { kernel, $, button, panel } = setup();
    await until(() => !!$('.jp-CodeLlama-input'));
    typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'Explain');
    await until(() => kernel.comm.requests('chat').length === 1);
    kernel.comm.reply({
      type: 'status',
      request_id: null,
      status: {
        state: 'loading',
        busy: true,
        queued: 1,
        model: 'embedded',
        progress: { stage: 'weights', fraction: 0.5 }
      }
    });
    button('Preview context')!.click();
    await until(
      () => !!$('progress') && !!$('.jp-CodeLlama-thinking') && !!button('Stop')
    );
    expect($('.jp-CodeLlama-preview')!.textContent).toBe(
      'Building the prompt…'
    );

    await kernel.restart();
    await until(
      () =>
        $('.jp-CodeLlama-message.jp-mod-assistant')!.dataset.state === 'error'
    );
    expect($('.jp-CodeLlama-message [role="alert"]')!.textContent).toContain(
      'restarted'
    );
    expect($('.jp-CodeLlama-thinking')).toBeNull();
    await until(
      () => $('.jp-CodeLlama-preview')?.textContent === 'The kernel restarted.'
    );
    // The extension is loaded again in the new kernel, whose model is not loaded.
    await until(
      () => $('.jp-CodeLlama-statusText')?.textContent === 'Model not loaded'
    );
    expect($('progress')).toBeNull();
    expect(kernel.executed.map(e => e.code)).toEqual([
      '%load_ext jupyter_codellama'
    ]);

    kernel.engineStatus = READY;
    kernel.comm.reply({ type: 'status', request_id: null, status: READY });
    await until(() => !!button('Send') || !!$('.jp-CodeLlama-input'));
    typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'Again');
    await until(() => kernel.comm.requests('chat').length === 1);
    const request = kernel.comm.requests('chat')[0];
    kernel.comm.reply({
      type: 'done',
      request_id: request.request_id,
      text: 'Back.',
      stop_reason: 'eos'
    });
    await until(() => panel.node.textContent!.includes('Back.'));
    expect(button('Stop')).toBeUndefined();
    panel.dispose();
  });

  it('toggles context chips, which change the next request', async () => {
    const { kernel, $, $$, panel } = setup();
    await until(() => $$('.jp-CodeLlama-chip').length === 5);
    const chip = (label: string) =>
      $$('.jp-CodeLlama-chip').find(c => c.textContent === label)!;
    expect(chip('Variables').getAttribute('aria-pressed')).toBe('true');
    expect(chip('Notebook').getAttribute('aria-pressed')).toBe('false');
    chip('Variables').click();
    chip('Active cell').click();
    await until(
      () => chip('Variables').getAttribute('aria-pressed') === 'false'
    );

    typeAndSend(
      $('.jp-CodeLlama-input') as HTMLTextAreaElement,
      'General question'
    );
    await until(() => kernel.comm.requests('chat').length === 1);
    const request = kernel.comm.requests('chat')[0];
    expect(request.variables).toBe(false);
    expect(request.cells).toBeUndefined();
    panel.dispose();
  });

  it('previews the context: text, token count, included and cut', async () => {
    const { kernel, $, button, panel } = setup();
    await until(() => !!button('Preview context'));
    button('Preview context')!.click();
    await until(() => kernel.comm.requests('context-preview').length === 1);
    const request = kernel.comm.requests('context-preview')[0];
    expect(request.for).toBe('chat');
    kernel.comm.reply({
      type: 'done',
      request_id: request.request_id,
      preview: {
        kind: 'chat',
        text: '<|im_start|>user\n# In[1]:\ndf = load()',
        ids: [1, 2, 3],
        tokens: 321,
        window: 8192,
        max_new_tokens: 512,
        stop: [],
        stop_token_ids: [],
        budget: 7000,
        used: 300,
        included: [
          { kind: 'current', label: 'In[1]', tokens: 20, truncated: false }
        ],
        cut: [{ kind: 'variable', label: 'df', tokens: 900, truncated: false }],
        notes: []
      }
    });
    await until(() => !!$('.jp-CodeLlama-previewText'));
    expect($('.jp-CodeLlama-previewSummary')!.textContent).toContain(
      '321 prompt tokens of a 8192-token window'
    );
    expect(panel.node.textContent).toContain('Included: In[1] (20)');
    expect(panel.node.textContent).toContain('Left out: df (900)');
    expect($('.jp-CodeLlama-previewText')!.textContent).toContain(
      'df = load()'
    );
    button('Hide context')!.click();
    await until(() => !$('.jp-CodeLlama-previewText'));
    panel.dispose();
  });

  it('keeps one conversation per notebook and clears it with New chat', async () => {
    const { kernel, model, $, $$, button, panel } = setup();
    await until(() => !!$('.jp-CodeLlama-input'));
    typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'First');
    await until(() => kernel.comm.requests('chat').length === 1);
    const id = kernel.comm.requests('chat')[0].request_id;
    kernel.comm.reply({
      type: 'done',
      request_id: id,
      text: 'Answer one',
      stop_reason: 'eos'
    });
    await until(() => panel.node.textContent!.includes('Answer one'));

    const first = model.target!;
    model.target = {
      ...first,
      id: 'nb-2',
      path: 'other.ipynb',
      label: 'other.ipynb'
    };
    await until(() => !panel.node.textContent!.includes('Answer one'));
    model.target = first;
    await until(() => panel.node.textContent!.includes('Answer one'));

    // The history goes with the next question.
    typeAndSend($('.jp-CodeLlama-input') as HTMLTextAreaElement, 'Second');
    await until(() => kernel.comm.requests('chat').length === 2);
    expect(
      kernel.comm.requests('chat')[1].messages.map((m: any) => m.content)
    ).toEqual(['First', 'Answer one', 'Second']);
    kernel.comm.reply({
      type: 'done',
      request_id: kernel.comm.requests('chat')[1].request_id,
      text: 'Two',
      stop_reason: 'eos'
    });
    await until(() => panel.node.textContent!.includes('Two'));

    button('New chat')!.click();
    await until(() => $$('.jp-CodeLlama-message').length === 0);
    panel.dispose();
  });
});

describe('Explain and fix', () => {
  it('send explain / fix requests with the conversation so far; the kernel words the question', async () => {
    const { kernel, model, $, panel } = setup();
    await answer(kernel, $, 'Earlier answer');
    const asking = model.ask(
      'Explain the active cell.',
      { activeCell: true },
      'explain'
    );
    await until(() => kernel.comm.requests('explain').length === 1);
    const explain = kernel.comm.requests('explain')[0];
    // No question text of ours: only the history, and the cell it is about.
    expect(explain.messages.map((m: any) => m.content)).toEqual([
      'Plot df',
      'Earlier answer'
    ]);
    expect(explain.current).toBe(0);
    expect(explain.cells[0].source).toBe('df = load()');
    kernel.comm.reply({
      type: 'done',
      request_id: explain.request_id,
      text: 'It loads df.',
      stop_reason: 'eos'
    });
    await asking;
    // What the conversation shows is the label, answered like any question.
    await until(() => panel.node.textContent!.includes('It loads df.'));
    expect(panel.node.textContent).toContain('Explain the active cell.');

    const fixing = model.ask(
      "Fix the active cell's error",
      { activeCell: true, lastError: true },
      'fix'
    );
    await until(() => kernel.comm.requests('fix').length === 1);
    const fix = kernel.comm.requests('fix')[0];
    expect(fix.messages.map((m: any) => m.content)).toEqual([
      'Plot df',
      'Earlier answer',
      'Explain the active cell.',
      'It loads df.'
    ]);
    kernel.comm.reply({
      type: 'done',
      request_id: fix.request_id,
      text: 'Fixed.',
      stop_reason: 'eos'
    });
    await fixing;
    expect(kernel.comm.requests('chat')).toHaveLength(1);
    panel.dispose();
  });
});

describe('Code block buttons', () => {
  // JupyterLab's parser puts a fence's language into `class="language-…"` unescaped, and its
  // sanitizer keeps `style="display:none"`: this fence renders a hidden span inside the block.
  const HIDDEN = "import&#32;os;os.remove('data.csv');";
  const SMUGGLED =
    '```python"><span/style=display:none>' +
    HIDDEN +
    '</span><i/class="\ndf.plot()\n```';

  it('insert and run the fenced source, never text hidden in the rendered block', async () => {
    const { kernel, actions, $, $$, panel } = setup(
      undefined,
      jupyterLabMarkdownParser()
    );
    await answer(kernel, $, 'Plot it:\n' + SMUGGLED);
    await until(() => $$('.jp-CodeLlama-codeAction').length === 4);
    // Generated code never runs, nor reaches the notebook, without a click.
    await new Promise(resolve => setTimeout(resolve, 50));
    expect(actions.calls).toEqual([]);
    expect(kernel.executed).toEqual([]);

    const calls = await clickAll(actions, $$);
    expect(calls.map(([action]) => action)).toEqual([
      'insertBelow',
      'replaceActive',
      'copy',
      'insertAndRun'
    ]);
    for (const [, code] of calls) {
      expect(code).toBe('df.plot()');
    }
    // What the block shows is what the buttons insert.
    expect($('.jp-CodeLlama-answer pre')!.textContent!.trim()).toBe(
      'df.plot()'
    );
    expect(panel.node.textContent).not.toContain('os.remove');
    panel.dispose();
  });

  it('are left off an answer with raw HTML code blocks, and say why', async () => {
    const { kernel, $, $$, panel } = setup(
      undefined,
      jupyterLabMarkdownParser()
    );
    const raw =
      '<pre>df.head()<span style="display:none">\nimport os; os.remove("data.csv")</span></pre>';
    await answer(
      kernel,
      $,
      'Look:\n\n' + raw + '\n\nThen:\n```python\ndf.plot()\n```'
    );
    await until(() => !!$('.jp-CodeLlama-codeNote'));
    expect($$('.jp-CodeLlama-codeAction')).toHaveLength(0);
    expect($('.jp-CodeLlama-codeNote')!.textContent).toContain('HTML');
    panel.dispose();
  });

  it('match every fenced block of the source: in a list, tilde fences, an answer cut mid-block', async () => {
    const { kernel, actions, $, $$, panel } = setup(
      undefined,
      jupyterLabMarkdownParser()
    );
    const text = [
      '1. Load it:',
      '   ```python',
      '   df = load()',
      '   if df.empty:',
      '       raise ValueError("empty")',
      '   ```',
      '2. Check:',
      '~~~',
      'print(df.shape)  # ``` not a fence end',
      '~~~',
      'And plot:',
      '```python',
      'df.plot(',
      '    x="a")'
    ].join('\n');
    await answer(kernel, $, text);
    await until(() => $$('.jp-CodeLlama-codeAction').length === 12);
    const inserted = (await clickAll(actions, $$))
      .filter(([action]) => action === 'insertBelow')
      .map(([, code]) => code);
    expect(inserted).toEqual([
      'df = load()\nif df.empty:\n    raise ValueError("empty")',
      'print(df.shape)  # ``` not a fence end',
      'df.plot(\n    x="a")'
    ]);
    panel.dispose();
  });
});

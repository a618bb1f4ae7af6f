/**
 * The code of an answer, read from its Markdown source. The code block buttons insert and run
 * this, never text taken from the rendered DOM: a rendered block can hold text that the reader
 * cannot see (JupyterLab's sanitizer keeps `style="display:none"`).
 */

/** An answer ready to render, with the code its buttons may insert. */
export interface IAnswerSource {
  /** The Markdown to render: the answer, each fence's info string cut to a plain language name. */
  markdown: string;
  /** The code of each fenced block, in order, exactly as written between its fences. */
  blocks: string[];
  /** Whether the text outside the fenced blocks holds raw HTML, which can hide or fake code. */
  hasHtml: boolean;
}

/** An opening code fence: its indentation, its marker (``` or ~~~, or longer) and language. */
interface IFence {
  indent: number;
  marker: string;
  language: string;
}

/** A raw HTML tag, comment or declaration, as CommonMark recognises one (conservatively). */
const HTML = /<\/?[A-Za-z][A-Za-z0-9-]*(?=[\s/>]|$)|<[!?]/m;

/** Split an answer into the Markdown to render and the code of its fenced blocks. */
export function parseAnswer(text: string): IAnswerSource {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  const markdown: string[] = [];
  const prose: string[] = [];
  const blocks: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const fence = openingFence(lines[i]);
    if (!fence) {
      markdown.push(lines[i]);
      prose.push(lines[i]);
      i++;
      continue;
    }
    // JupyterLab writes the language into an attribute unescaped: keep only a plain name.
    markdown.push(' '.repeat(fence.indent) + fence.marker + fence.language);
    // The fence's indentation is taken off its lines too (CommonMark).
    const indentation = new RegExp(`^ {0,${fence.indent}}`);
    const body: string[] = [];
    for (i++; i < lines.length && !closes(lines[i], fence); i++) {
      markdown.push(lines[i]);
      body.push(lines[i].replace(indentation, ''));
    }
    if (i < lines.length) {
      markdown.push(lines[i]);
      i++;
    } else {
      // A block left open (an answer cut short) ends with the text; trailing blank lines go.
      while (body.length > 0 && body[body.length - 1].trim() === '') {
        body.pop();
      }
    }
    blocks.push(body.join('\n'));
  }
  return {
    markdown: markdown.join('\n'),
    blocks,
    hasHtml: HTML.test(prose.join('\n'))
  };
}

/**
 * The fence that `line` opens, if any. Any indentation is accepted, so that fences inside list
 * items count; the rendered blocks are checked against these before any button is shown.
 */
function openingFence(line: string): IFence | null {
  const match = /^( *)(`{3,}|~{3,})(.*)$/.exec(line);
  if (!match) {
    return null;
  }
  const [, indent, marker, info] = match;
  // A backtick fence's info string cannot hold a backtick (CommonMark): that is inline code.
  if (marker[0] === '`' && info.includes('`')) {
    return null;
  }
  const language = info
    .trim()
    .split(/\s/)[0]
    .replace(/[^\w+#.-]/g, '');
  return { indent: indent.length, marker, language };
}

/** Whether `line` closes `fence`: the same character, at least as many, nothing else. */
function closes(line: string, fence: IFence): boolean {
  const trimmed = line.trim();
  return (
    trimmed.length >= fence.marker.length &&
    trimmed === fence.marker[0].repeat(trimmed.length)
  );
}

/**
 * Whether the rendered `<pre>` blocks are the answer's fenced blocks, one for one, each showing
 * exactly its code. Anything else (raw HTML, an indented block, a fence the renderer read
 * differently) means a button could act on code other than the code shown next to it.
 */
export function blocksMatch(
  pres: readonly HTMLElement[],
  answer: IAnswerSource
): boolean {
  if (answer.hasHtml || pres.length !== answer.blocks.length) {
    return false;
  }
  return pres.every((pre, i) => {
    const shown = pre.textContent ?? '';
    const code = answer.blocks[i];
    // Without highlighting, the renderer ends a block with a newline of its own.
    return shown === code || shown === code + '\n';
  });
}

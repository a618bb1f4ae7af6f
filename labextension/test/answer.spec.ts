import { parseAnswer } from '../src/chat/answer';

describe('parseAnswer', () => {
  it('reads each fenced block exactly as written between its fences', () => {
    const answer = parseAnswer(
      [
        'Text',
        '````markdown',
        '```python',
        'x = 1',
        '```',
        '````',
        '```',
        '',
        '  indented',
        '```'
      ].join('\r\n')
    );
    expect(answer.blocks).toEqual(['```python\nx = 1\n```', '\n  indented']);
    expect(answer.hasHtml).toBe(false);
  });

  it('does not take inline code for a fence', () => {
    expect(parseAnswer('Use ```x``` here').blocks).toEqual([]);
  });

  it('renders a fence with a plain language name only', () => {
    const answer = parseAnswer(
      '```python"><span/style=display:none>x</span><i/class="\nprint(1)\n```'
    );
    expect(answer.markdown).toBe(
      '```pythonspanstyledisplaynonexspaniclass\nprint(1)\n```'
    );
    expect(answer.blocks).toEqual(['print(1)']);
  });

  it('finds raw HTML outside the fenced blocks only', () => {
    expect(parseAnswer('```html\n<pre>ok</pre>\n```').hasHtml).toBe(false);
    expect(parseAnswer('See <pre>x</pre>').hasHtml).toBe(true);
    expect(parseAnswer('<!-- hidden -->').hasHtml).toBe(true);
    expect(parseAnswer('if a < b and c > d').hasHtml).toBe(false);
  });
});

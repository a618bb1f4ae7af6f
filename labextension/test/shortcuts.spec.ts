/**
 * Our default shortcuts must not take any of JupyterLab's: JupyterLab then skips its own default
 * (as it did with "New Launcher"), or one of the two silently wins inside a notebook.
 *
 * JupyterLab's shortcuts are read from the schemas of the JupyterLab that the project's virtual
 * environment installs (set VENV to use another one, as for the UI tests).
 */
import * as fs from 'fs';
import * as path from 'path';

interface IShortcut {
  command: string;
  keys?: string[];
  macKeys?: string[];
  winKeys?: string[];
  linuxKeys?: string[];
  disabled?: boolean;
}

type OS = 'mac' | 'win' | 'linux';
const PLATFORMS: OS[] = ['mac', 'win', 'linux'];
const MODIFIERS = ['Ctrl', 'Alt', 'Shift', 'Cmd'];

const venv = process.env.VENV || path.resolve(__dirname, '..', '..', '.venv');
const JUPYTERLAB_SCHEMAS = path.join(
  venv,
  'share',
  'jupyter',
  'lab',
  'schemas',
  '@jupyterlab'
);
const OUR_SCHEMAS = path.resolve(__dirname, '..', 'schema');

function schemaFiles(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap(entry =>
      entry.isDirectory()
        ? schemaFiles(path.join(dir, entry.name))
        : entry.name.endsWith('.json')
          ? [path.join(dir, entry.name)]
          : []
    );
}

function shortcutsIn(dir: string): IShortcut[] {
  return schemaFiles(dir).flatMap(
    file =>
      JSON.parse(fs.readFileSync(file, 'utf8'))['jupyter.lab.shortcuts'] ?? []
  );
}

/** One keystroke in a canonical form for `os`: modifiers in a fixed order, Accel resolved. */
function normalize(keystroke: string, os: OS): string {
  const parts = keystroke.trim().split(/\s+/);
  const key = parts.pop()!;
  const modifiers = new Set(
    parts.map(m => (m === 'Accel' ? (os === 'mac' ? 'Cmd' : 'Ctrl') : m))
  );
  return [
    ...MODIFIERS.filter(m => modifiers.has(m)),
    key.length === 1 ? key.toUpperCase() : key
  ].join(' ');
}

/** The key sequence `shortcut` binds on `os`, or null when it binds none there. */
function sequence(shortcut: IShortcut, os: OS): string[] | null {
  const keys = shortcut[`${os}Keys`] ?? shortcut.keys ?? [];
  if (
    shortcut.disabled ||
    keys.length === 0 ||
    keys.every(k => k.trim() === '')
  ) {
    return null;
  }
  return keys.map(k => normalize(k, os));
}

/** Equal sequences collide, and so does one that starts the other (a chord waits for more). */
function collide(a: string[], b: string[]): boolean {
  const n = Math.min(a.length, b.length);
  return a.slice(0, n).join(', ') === b.slice(0, n).join(', ');
}

describe('default shortcuts', () => {
  const ours = shortcutsIn(OUR_SCHEMAS);

  it("take none of JupyterLab's own", () => {
    if (!fs.existsSync(JUPYTERLAB_SCHEMAS)) {
      throw new Error(
        `JupyterLab's schemas are not in ${JUPYTERLAB_SCHEMAS}: set VENV to the virtual environment`
      );
    }
    const theirs = shortcutsIn(JUPYTERLAB_SCHEMAS);
    // The reading works: the shortcut we once took is among JupyterLab's.
    expect(theirs.map(s => s.command)).toContain('launcher:create');
    expect(ours.length).toBeGreaterThan(0);

    const collisions: string[] = [];
    for (const os of PLATFORMS) {
      for (const mine of ours) {
        const keys = sequence(mine, os);
        for (const their of theirs) {
          const other = sequence(their, os);
          if (keys && other && collide(keys, other)) {
            collisions.push(
              `${os}: ${mine.command} [${keys}] takes ${their.command} [${other}]`
            );
          }
        }
      }
    }
    expect(collisions).toEqual([]);
  });

  it('do not collide with each other', () => {
    for (const os of PLATFORMS) {
      const sequences = ours.map(s => sequence(s, os)!.join(', '));
      expect(new Set(sequences).size).toBe(sequences.length);
    }
  });
});

/**
 * Galata (Playwright) configuration: Debian's Chromium, one worker (2-core machines), a real
 * JupyterLab server from the project's .venv with the embedded model.
 */
const path = require('path');
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

const port = process.env.GALATA_PORT || '8899';
const root = path.resolve(__dirname, '..', '..');
const venv = process.env.VENV || path.join(root, '.venv');

module.exports = {
  ...baseConfig,
  testDir: './tests',
  outputDir: './test-results',
  reporter: [
    ['list'],
    ['html', { open: 'never', outputFolder: 'playwright-report' }]
  ],
  timeout: 120000,
  expect: { timeout: 30000 },
  workers: 1,
  retries: process.env.CI ? 1 : 0,
  use: {
    ...baseConfig.use,
    baseURL: `http://127.0.0.1:${port}`,
    autoGoto: true,
    viewport: { width: 1280, height: 800 },
    trace: 'off',
    video: 'off',
    screenshot: 'only-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run'
      ]
    }
  },
  webServer: {
    command: `${venv}/bin/jupyter lab --config ${path.join(__dirname, 'jupyter_server_test_config.py')}`,
    url: `http://127.0.0.1:${port}/lab`,
    timeout: 120000,
    reuseExistingServer: !process.env.CI,
    env: {
      ...process.env,
      JUPYTER_CODELLAMA_CACHE:
        process.env.JUPYTER_CODELLAMA_CACHE ||
        path.join(root, '.cache', 'jupyter_codellama')
    }
  }
};

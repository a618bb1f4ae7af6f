import { LabIcon } from '@jupyterlab/ui-components';

/** A speech bubble with code brackets, drawn in the theme's icon colour. */
export const codeLlamaIcon = new LabIcon({
  name: 'jupyter-codellama:chat',
  svgstr: `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm0 2v11h2v2l2.5-2H20V5H4z"/>
    <path d="M9.6 7.4 6.9 10.5l2.7 3.1 1.2-1-1.8-2.1 1.8-2.1zm4.8 0-1.2 1 1.8 2.1-1.8 2.1 1.2 1 2.7-3.1z"/>
  </g>
</svg>`
});

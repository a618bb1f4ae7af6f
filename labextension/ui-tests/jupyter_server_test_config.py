"""Jupyter server for the Galata UI tests: the venv's JupyterLab with this extension linked in.

The kernels are the venv's Python; the embedded model loads from JUPYTER_CODELLAMA_CACHE.
"""
import os

from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)  # noqa: F821
c.ServerApp.port = int(os.environ.get("GALATA_PORT", "8899"))  # noqa: F821
c.ServerApp.ip = "127.0.0.1"  # noqa: F821
c.ServerApp.allow_root = True  # noqa: F821
# A worktree's own build of the extension: a folder holding `jupyter-codellama/` (a link to that
# worktree's jupyter_codellama/labextension), served before the one installed in the venv, so
# that a branch's UI tests run against that branch's front end.
if os.environ.get("JCL_EXTRA_LABEXTENSIONS"):
    import jupyterlab.galata

    c.LabServerApp.extra_labextensions_path = [  # noqa: F821
        os.path.dirname(jupyterlab.galata.__file__), os.environ["JCL_EXTRA_LABEXTENSIONS"]]

"""Test helpers for jupyter-codellama (offline stand-ins for assets that normally come from a model hub)."""

"""The compiled kernel's cache: a private folder, and nothing loaded that another user could
have written."""

import os
import stat

import pytest

from jupyter_codellama.engine import kernels

SOURCES = ("kquants.c",)  # the smallest source: compiles in seconds


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(cache_dir, library path) of a generic build in a fresh cache folder."""
    cache = tmp_path_factory.mktemp("kernel-cache")
    return cache, kernels.library_path("generic", cache, SOURCES)


def test_the_cache_folder_is_created_private(built):
    cache, library = built
    folder = cache / "kernels"
    assert library.parent == folder and library.is_file()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.parametrize("what, mode", [("folder", 0o777), ("folder", 0o770), ("library", 0o666), ("library", 0o775)])
def test_a_library_others_can_write_is_refused(built, what, mode):
    cache, library = built
    target = library.parent if what == "folder" else library
    before = stat.S_IMODE(target.stat().st_mode)
    target.chmod(mode)
    try:
        with pytest.raises(kernels.KernelUnavailable, match=r"writable by other users.*chmod") as info:
            kernels.load_library("generic", cache, SOURCES)
        assert str(target) in str(info.value)
    finally:
        target.chmod(before)
    assert kernels.library_path("generic", cache, SOURCES) == library  # private again: accepted


def test_a_library_owned_by_someone_else_is_refused(built, monkeypatch):
    cache, library = built
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)
    with pytest.raises(kernels.KernelUnavailable, match="owned by user .* not by you"):
        kernels.load_library("generic", cache, SOURCES)

"""A fake gs:// for tests: an fsspec in-memory filesystem that, like GCS through gcsfs, cannot append.

``install(monkeypatch)`` registers it for the gs/gcs protocols and makes ``etils.epath`` reach it
the way it reaches the real GCS (its fsspec backend: ``fsspec.filesystem("gcs", ...)``), so code
under test runs its real gs:// path. Opening an object in append mode starts a new, empty object,
as gcsfs does (an object store has no append): what was there before is lost on close.
"""

import functools

import pytest
from etils.epath import backend, gpath
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry


class FakeGCSFileSystem(MemoryFileSystem):
    protocol = ("gs", "gcs")
    root_marker = ""
    store: dict = {}  # its own objects, not MemoryFileSystem's
    pseudo_dirs = [""]

    def __init__(self, *args, finalize_on_close: bool = False, **kwargs):  # epath passes gcsfs's flag
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path) -> str:
        path = str(path)
        for prefix in ("gs://", "gcs://"):
            path = path.removeprefix(prefix)
        return path.strip("/")

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode:  # gcsfs uploads only what this handle writes: the object is replaced
            mode = mode.replace("a", "w")
        return super()._open(path, mode, **kwargs)


def install(monkeypatch: pytest.MonkeyPatch) -> FakeGCSFileSystem:
    """Routes gs:// paths (etils.epath, fsspec) to a fresh, empty FakeGCSFileSystem."""
    monkeypatch.setattr(FakeGCSFileSystem, "store", {})
    monkeypatch.setattr(FakeGCSFileSystem, "pseudo_dirs", [""])
    for protocol in ("gs", "gcs"):
        monkeypatch.setitem(_registry, protocol, FakeGCSFileSystem)
    # epath prefers TensorFlow's gfile for gs:// when TensorFlow is installed; take the gcsfs path.
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    # epath caches its filesystems: an empty cache for the test, the untouched one restored after.
    cached = backend._FileSystemSpecBackend._get_filesystem
    monkeypatch.setattr(backend._FileSystemSpecBackend, "_get_filesystem",
                        functools.lru_cache()(cached.__wrapped__))
    FakeGCSFileSystem.clear_instance_cache()
    return FakeGCSFileSystem()

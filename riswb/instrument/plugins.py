"""Local probe plugins, loaded by path (like pytest's conftest.py).

Every `*.py` file directly in the folder (default `./probes`; names starting with `_` are
skipped, so helpers can live beside the plugins) is imported as its own module, by path,
without touching `sys.path`. Each `Probe` subclass *defined* in a file (not imported into it;
not starting with `_`) is a plugin; `load_plugins` instantiates each with no arguments.

A file that fails to import, or a class that fails to instantiate, raises `RiswbError`
naming the file (the CLI prints it on one line and exits 2): a broken plugin is never
skipped silently.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from riswb.errors import RiswbError
from riswb.instrument.hooks import Probe

DEFAULT_DIR = "probes"


def plugin_files(directory: str | os.PathLike | None = None) -> list[Path]:
    """The plugin files of `directory` (None: ./probes, which may be absent)."""
    root = Path(directory) if directory is not None else Path(DEFAULT_DIR)
    if not root.is_dir():
        if directory is None:
            return []
        raise RiswbError(f"probe plugin folder {root} does not exist")
    return sorted(
        p for p in root.glob("*.py") if p.is_file() and not p.name.startswith("_")
    )


def _import(path: Path) -> ModuleType:
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    module_name = f"riswb_plugin_{resolved.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise RiswbError(f"probe plugin {path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(module_name, None)
        raise
    except BaseException as error:  # SystemExit from a plugin is a broken plugin too
        sys.modules.pop(module_name, None)
        where = ""
        if isinstance(error, SyntaxError) and error.lineno:
            where = f" (line {error.lineno})"
        raise RiswbError(
            f"probe plugin {path} failed to load{where}: {type(error).__name__}: {error}"
        ) from error
    return module


def plugin_classes(directory: str | os.PathLike | None = None) -> list[type[Probe]]:
    """Probe subclasses defined in the plugin files, in file then definition order."""
    classes: list[type[Probe]] = []
    for path in plugin_files(directory):
        module = _import(path)
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, Probe)
                and obj is not Probe
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                obj.__riswb_plugin_file__ = str(path)
                classes.append(obj)
    return classes


def load_plugins(directory: str | os.PathLike | None = None) -> list[Probe]:
    """One instance of every plugin probe in `directory` (None: ./probes if present)."""
    probes = []
    for cls in plugin_classes(directory):
        try:
            probes.append(cls())
        except Exception as error:
            path = getattr(cls, "__riswb_plugin_file__", "?")
            raise RiswbError(
                f"probe plugin {path}: {cls.__name__}() failed: {type(error).__name__}: {error}"
            ) from error
    return probes

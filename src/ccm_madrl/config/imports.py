"""Code named by import path: ``'module:attribute'`` in a config (a learner, a part, a backend)
names an object every process imports the same way, the sweep's parent, a spawned local worker, a
Ray task and a SLURM job alike (the module must be importable there: installed, or on
``PYTHONPATH``). Nothing here imports training code; a name is imported only when a run starts
(a config validated under ``config.agent.RESOLVE``) or when the part is looked up."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

# 'module:attribute': dotted identifiers, nothing else
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def is_import_path(name: str) -> bool:
    """Whether ``name`` has the form of an import path (``'module:attribute'``)."""
    return isinstance(name, str) and IMPORT_PATH.fullmatch(name) is not None


def import_object(path: str, what: str = "object"):
    """The object named by ``'module:attribute'``; ValueError naming ``what`` and ``path`` (one line)
    when the form is wrong, the module does not import or has no such attribute. This imports the
    module, running its code."""
    if not is_import_path(path):
        raise ValueError(f"{what} {path!r}: expected 'module:attribute' (dotted identifiers)")
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import {what} {path!r}: {err}") from None


class Registry(dict):
    """A registry of named parts whose lookup also takes an import path: ``registry[name]`` is the
    entry ``name`` or, for ``'module:attribute'``, the imported object (not stored, so the registry's
    keys stay the built-in names); ``name in registry`` is True for an entry or an importable path."""

    def __init__(self, entries: Mapping[str, Any] | Iterable = (), what: str = "part"):
        super().__init__(entries)
        self.what = what

    def __missing__(self, name: str):
        if not is_import_path(name):
            raise KeyError(name)
        return import_object(name, self.what)

    def __contains__(self, name: object) -> bool:
        if dict.__contains__(self, name):
            return True
        if not (isinstance(name, str) and is_import_path(name)):
            return False
        try:
            import_object(name, self.what)
        except ValueError:
            return False
        return True

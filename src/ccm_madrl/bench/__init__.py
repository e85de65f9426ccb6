"""Reproducible speed measurements (``ccm-madrl bench``), one module per benchmark: ``env``,
``agent``, ``pack`` (``bench agent --pack``), ``monitor``, ``argmax`` and ``published`` (the
published code, timed beside them); ``common`` holds what they share, ``options`` their options.
Results are JSON with the machine's description; ``benchmarks/`` keeps the recorded ones.

Importing the package loads no torch: its names load their module when first used."""

from __future__ import annotations

import importlib
from pathlib import Path

from .options import OPTIONS

# benchmark name -> (module, function); the same names as OPTIONS
BENCHMARKS = {
    "env": ("env", "bench_env"),
    "agent": ("agent", "bench_agent"),
    "monitor": ("monitor", "bench_monitor"),
    "pack": ("pack", "bench_pack"),
    "argmax": ("argmax", "bench_argmax"),
}
# public name -> the module that defines it
_NAMES = {
    **{fn: module for module, fn in BENCHMARKS.values()},
    **dict.fromkeys(("machine", "matmul_peak_gflops", "argmax_floor", "sequential_step_profile"), "common"),
    **dict.fromkeys(("TABLE1_GRID", "grid_configs", "replay_batch", "grid_pack_batch"), "pack"),
    **dict.fromkeys(("PUBLISHED_SUBDIR", "bench_published"), "published"),
}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])


def command(which: str, options) -> str:
    """The command line that runs the benchmark ``which`` with ``options`` (as recorded)."""
    if which != "pack":
        return f"ccm-madrl bench {which}"
    return f"ccm-madrl bench agent --pack {' '.join(map(str, options.packs))}" + (
        " --monitor" if options.monitors[0] else ""
    )


def run(which: str, out_dir: str | Path | None, name: str | None = None, **kw) -> dict:
    """Run the benchmark ``which`` with the options ``kw`` (checked by ``options.OPTIONS[which]``, a
    ValueError naming the option and its minimum; every option recorded, the defaults included) and
    write ``<out_dir>/<name or which>.json``."""
    from .. import jsonio

    module, fn = BENCHMARKS[which]
    bench = getattr(importlib.import_module(f".{module}", __name__), fn)  # loads the registries first
    options = OPTIONS[which](**kw)
    machine = importlib.import_module(".common", __name__).machine
    res = {
        "benchmark": which,
        "machine": machine(),
        "command": command(which, options),
        "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in dict(options).items()},
        **bench(**dict(options)),
    }
    if out_dir:
        p = Path(out_dir)
        p.mkdir(parents=True, exist_ok=True)
        (p / f"{name or which}.json").write_text(jsonio.dumps(res))
    return res


__all__ = ["BENCHMARKS", "OPTIONS", "command", "run", *_NAMES]

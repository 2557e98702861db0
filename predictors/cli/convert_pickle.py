"""`convert-pickle`: turn a pickle or joblib file the user trusts into a skops file the server loads.

The server never unpickles (loading a pickle runs whatever code it holds), so a scikit-learn
pipeline saved with pickle or joblib, as KServe's sklearn server takes them, is served only once
converted. This command:

1. shows what the file holds without loading it: every importable name unpickling would import and
   call (a restricted unpickler that imports nothing but numpy's array rebuilding, and records the
   rest), each marked trusted or not, and the pipeline's steps;
2. stops if any name is outside the server's trusted-type list: such a pickle may run that code when
   loaded, and the server could not serve the result anyway;
3. asks (or takes --yes), then loads it with an unpickler that can import only those trusted names;
4. writes model.skops beside it (or --output), loads that back exactly as the server does, and
   checks that it answers the same as the unpickled pipeline on sample texts.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.skops_files import TRUSTED_TYPES, PipelineFileError, check_pipeline, dump_pipeline, load_pipeline
from ..backends.sklearn_pipeline import pipeline_logits
from ..model import HELDOUT_FILE, SKOPS_FILE

#: Names a pickle of numpy arrays uses to rebuild them (data, not behaviour), and joblib's wrapper.
ARRAY_GLOBALS = frozenset({
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
    "numpy.ndarray", "numpy.dtype", "_codecs.encode", "joblib.numpy_pickle.NumpyArrayWrapper",
})
#: Everything a convertible pickle may reference.
ALLOWED = ARRAY_GLOBALS | frozenset(TRUSTED_TYPES)
#: The texts the converted file must answer like the pickle on, when the folder has no heldout.jsonl.
SAMPLE_TEXTS = (
    "Great product, arrived quickly and works exactly as described.",
    "Terrible customer service. I waited two weeks and nobody answered.",
    "The central bank raised interest rates by a quarter point.",
    "", "!!!", "12345", "Café crème, naïve façade, ÉCOLE.",
)


class ConversionRefused(RuntimeError):
    """The file cannot be converted; the message says why."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-pickle",
        help="convert a pickle/joblib scikit-learn pipeline you trust into model.skops",
        description="Show what a pickle or joblib file references (without loading it), then, if every name is a "
        "trusted scikit-learn text pipeline type and you confirm, load it and write it as a skops file the "
        "server loads safely, checking that both answer alike. Exit status 1 when the file is refused, 2 on "
        "a usage or file error.",
    )
    parser.add_argument("path", help="the .pkl, .pickle or .joblib file")
    parser.add_argument("--output", help=f"where to write the skops file (default: {SKOPS_FILE} beside the pickle)")
    parser.add_argument("--yes", action="store_true", help="convert without asking (you trust the file)")
    parser.set_defaults(func=run)


# ---- reading the file ----------------------------------------------------------------------------
def pickle_bytes(path: Path) -> tuple[bytes, str]:
    """The pickle stream of a pickle or joblib file (joblib may compress it), and its format."""
    raw = path.read_bytes()
    for magic, name, decompress in (
        (b"\x1f\x8b", "gzip", gzip.decompress), (b"BZh", "bz2", bz2.decompress),
        (b"\xfd7zXZ", "xz", lzma.decompress), (b"]\x00\x00", "lzma", lzma.decompress), (b"x", "zlib", zlib.decompress),
    ):
        if raw.startswith(magic):
            try:
                return decompress(raw), f"{name}-compressed pickle"
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
                raise ConversionRefused(f"{path} looks {name}-compressed but does not decompress: {exc}") from None
    return raw, "pickle"


def _unpickler_class() -> type:
    """joblib's unpickler (it reads the arrays joblib writes beside the pickle stream); it reads
    plain pickles too."""
    from joblib.numpy_pickle import NumpyUnpickler

    return NumpyUnpickler


class _Stub:
    """Stands in for anything a pickle references beyond array data: records how it is built,
    runs nothing."""

    name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Stub":
        instance = object.__new__(cls)
        instance.args, instance.state, instance.items = args, None, []
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Stub":
        return type(self)(*args)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)


def inspect_pickle(path: Path) -> tuple[list[str], Any, str]:
    """The names unpickling `path` would import (in first-use order), the object it would build
    (anything but array data stubbed), and the file's format. Imports nothing the pickle names
    except numpy's array rebuilding."""
    data, kind = pickle_bytes(path)
    referenced: dict[str, None] = {}
    base = _unpickler_class()

    class Inspector(base):  # type: ignore[misc, valid-type]
        def find_class(self, module: str, name: str) -> Any:
            full = f"{module}.{name}"
            referenced[full] = None
            if full in ARRAY_GLOBALS:
                return super().find_class(module, name)
            return type(name, (_Stub,), {"name": full})

    try:
        obj = Inspector(str(path), io.BytesIO(data), True).load()
    except Exception as exc:  # a truncated or foreign file
        raise ConversionRefused(f"{path} is not a readable {kind}: {type(exc).__name__}: {exc}") from None
    return list(referenced), obj, kind


def describe(obj: Any) -> str:
    """One line for the object a pickle builds: a pipeline's steps, else its type."""
    if isinstance(obj, _Stub):
        state = obj.state if isinstance(obj.state, dict) else {}
        steps = state.get("steps")
        if isinstance(steps, list) and all(isinstance(s, tuple) and len(s) == 2 for s in steps):
            return f"{obj.name} with steps " + ", ".join(
                f"{name}={getattr(step, 'name', type(step).__name__).rsplit('.', 1)[-1]}" for name, step in steps)
        return obj.name
    return type(obj).__name__


def load_trusted(path: Path) -> Any:
    """Unpickle `path`, able to import only ALLOWED names (the user confirmed they trust it)."""
    data, _ = pickle_bytes(path)
    base = _unpickler_class()

    class Restricted(base):  # type: ignore[misc, valid-type]
        def find_class(self, module: str, name: str) -> Any:
            if f"{module}.{name}" not in ALLOWED:
                raise pickle.UnpicklingError(f"{module}.{name} is not a trusted type")
            return super().find_class(module, name)

    return Restricted(str(path), io.BytesIO(data), True).load()


# ---- the command ---------------------------------------------------------------------------------
def sample_texts(folder: Path) -> list[str]:
    """The folder's held-out texts (at most 200) and the built-in ones."""
    texts = list(SAMPLE_TEXTS)
    heldout = folder / HELDOUT_FILE
    if heldout.is_file():
        with heldout.open(encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        texts += [str(row.get("text", "")) for row in rows[:200]]
    return texts


def convert(path: Path, output: Path, confirm: Any) -> str:
    """Inspect, confirm (confirm(prompt) -> bool), load, write and verify; returns the report lines."""
    names, obj, kind = inspect_pickle(path)
    lines = [f"{path}: a {kind}; loading it would import and call:"]
    lines += [f"  {'trusted    ' if name in ALLOWED else 'NOT TRUSTED'}  {name}" for name in names]
    lines.append(f"It builds: {describe(obj)}")
    print("\n".join(lines))
    untrusted = [name for name in names if name not in ALLOWED]
    if untrusted:
        raise ConversionRefused(
            f"refusing to load {path}: it references {', '.join(untrusted)}, outside the trusted types of a "
            "scikit-learn text pipeline (predictors/backends/skops_files.py); unpickling it may run that code, "
            "and the server could not serve it"
        )
    if not confirm(f"Load {path.name} (you trust it) and write {output}? [y/N] "):
        raise ConversionRefused("not converted: not confirmed")
    pipeline = load_trusted(path)
    try:
        check_pipeline(pipeline, path.name)
    except PipelineFileError as exc:
        raise ConversionRefused(str(exc)) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, scratch = tempfile.mkstemp(dir=output.parent, prefix=f".{output.stem}.", suffix=output.suffix)
    os.close(handle)
    try:
        dump_pipeline(pipeline, scratch)
        loaded = load_pipeline(Path(scratch))  # exactly as the server loads it
        texts = sample_texts(path.parent)
        if not np.array_equal(pipeline_logits(pipeline, texts), pipeline_logits(loaded, texts)):
            raise ConversionRefused(f"the skops file answers differently from {path.name}; nothing written")
        os.chmod(scratch, 0o644)
        os.replace(scratch, output)
    except PipelineFileError as exc:
        raise ConversionRefused(f"the converted file would not load: {exc}") from None
    finally:
        Path(scratch).unlink(missing_ok=True)
    return (f"wrote {output} ({output.stat().st_size / 1e3:.0f} kB); it answers as {path.name} on {len(texts)} texts. "
            f"The server loads it on its next (re)load; it never loads {path.name}, which you can remove.")


def _ask(prompt: str) -> bool:
    if not sys.stdin.isatty():
        raise ConversionRefused("not converted: pass --yes to convert without a terminal to confirm on")
    return input(prompt).strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else path.with_name(SKOPS_FILE)
    try:
        print(convert(path, output, (lambda prompt: True) if args.yes else _ask))
    except ConversionRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

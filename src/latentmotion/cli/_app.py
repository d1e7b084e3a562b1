"""The command-line contract, written once for every command.

* A user error (:class:`~latentmotion.errors.LatentMotionError`, a bad option,
  a file-system refusal) prints one line ``error: ...`` on stderr and exits 2.
* SIGINT prints ``interrupted`` and exits 130; SIGTERM prints ``terminated``
  and exits 143. Both raise :class:`~latentmotion.cli._exit.Interrupted` in the main thread, so every
  ``finally`` and staging clean-up runs first. The handler also records the
  signal: when its exception comes out as another one (raised where a numba
  kernel returns: ``SystemError ... returned a result with an exception set``;
  or turned by a library into its own error, such as PyAV's ``Interrupted
  system call``), the exit still follows the signal; when it is swallowed (raised
  inside a ctypes callback, as numba's compiler makes them), it is signalled again.
* Outputs go through :mod:`latentmotion.outputs` (staged, then renamed), so an
  error or an interruption leaves ``--out`` as it was.
* Once a command has finished, a signal during the interpreter's shutdown (about a
  second of library clean-up) still prints its word and exits by it, at once: no
  exception is raised into that clean-up.
"""

from __future__ import annotations

import signal
import sys

import typer
from rich.console import Console

from ._exit import fail as _fail
from ._exit import one_line, run_contract, settle

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Motion in the latent space of CNNs (collaborative intelligence).")
console = Console(markup=False, highlight=False, soft_wrap=True)  # text from streams and paths as it is, never as markup,
# and never broken at 80 columns where stdout is a file or a pipe


#: the help of options many commands share, written once
HELP = {
    "video": "video file, or a bundled clip's name, such as bikes.mp4 (an unknown name lists them)",
    "frames": "number of frames, from --start",
    "model": "the network: a name `latentmotion models` lists, or package.module:factory",
    "layer": "a layer of MODEL: the cut (`latentmotion layers MODEL` lists them)",
    "weights": "imagenet, random (seeded by --seed) or a state_dict path",
    "seed": "seed of random weights (--weights random)",
}

#: motion tools that ``codec encode`` and ``stream`` leave at the codec's defaults (the others become options)
MOTION_SKIP = ("mblock", "search", "rd", "lam")


def config_options(cls, skip: tuple[str, ...] = ()):
    """Decorator: the command gets one option per field of the dataclass ``cls`` (not in ``skip``), with the
    field's default and its ``metadata["help"]``, and receives their values as one dict, ``config``.

    The defaults and help live once, in the library's dataclass; the command adds its own parameters.
    """
    import dataclasses
    import functools
    import inspect
    import typing

    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]

    def wrap(fn):
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "config"]
        extra = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                              default=typer.Option(f.default, help=f.metadata.get("help", "")))
            for f in fields
        ]  # fmt: skip

        @functools.wraps(fn)
        def command(**kw):
            return fn(**{k: v for k, v in kw.items() if k not in names}, config={k: kw[k] for k in names})

        names = {f.name for f in fields}
        command.__signature__ = inspect.Signature([*(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own), *extra])
        command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
        return command

    return wrap


def _load_heavy_modules() -> None:
    """Import torch & co. and the commands with SIGINT/SIGTERM held, then take any signal that came meanwhile.

    An import cut short leaves half-initialised modules behind, whose next use
    fails with unrelated errors; a held signal arrives once the imports are done.
    """
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        import torchvision  # noqa: F401

        from . import codec, paper, service  # noqa: F401  (register the commands)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run_app(args: list[str] | None = None) -> None:
    """Run the Typer app under the contract above (the ``latentmotion`` entry point)."""
    run_contract(lambda: _run(args), _parser_exit)


def _run(args: list[str] | None) -> int:
    _load_heavy_modules()
    code = app(args=args, standalone_mode=False)  # Typer returns an exit code it chose (130 for a KeyboardInterrupt)
    if code == 130:
        _fail("interrupted", 130)
    return code if isinstance(code, int) else 0


def _parser_exit(exc: Exception) -> None:
    """Exit for the parser's own exceptions (Typer vendors click, so they are matched by shape)."""
    name = type(exc).__name__
    if name == "NoArgsIsHelpError":  # the help went to stdout; its message is empty where the help is rich's
        _fail(exc.format_message().strip() or "error: missing command (the commands are listed above)", 2)  # type: ignore[attr-defined]
    if name == "Exit":  # --help and the like: finished
        settle()
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    if name == "Abort":  # an interactive prompt was cancelled
        _fail("interrupted", 130)
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # bad option, bad number
        _fail(f"error: {one_line(exc.format_message())}", 2)  # type: ignore[attr-defined]

"""What every dpsnet command line shares: argument checks, one-line errors and exit codes.

Exit codes, the same in every tool under ``tools/``, ``demo/`` and ``datasets/``:

* ``0`` the job ran and its checks passed;
* ``1`` the job ran but a check failed (e.g. a dataset with faults, no image checked out);
* ``2`` bad input: a wrong flag, config key or file, named in ONE line on stderr, no traceback;
* ``130`` interrupted by Ctrl-C (one line; the state written so far resumes).

A tool builds its parser with ``ArgumentParser`` (or passes detectron2's through
``one_line_errors``), types its numeric flags with ``int_at_least`` / ``unit_float`` / ...,
and runs its ``main`` through ``run``::

    def main(argv=None) -> int:
        args = get_parser().parse_args(argv)
        ...

    if __name__ == "__main__":
        sys.exit(run(main))
"""

import argparse
import logging
import sys
from collections.abc import Callable

from dpsnet.engine.setup import ConfigError
from dpsnet.utils.io import BadInputError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CHECK_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "ArgumentParser",
    "add_config_args",
    "error",
    "float_at_least",
    "float_in",
    "int_at_least",
    "name_list",
    "one_line_errors",
    "run",
    "setup_logging",
    "unit_float",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

#: Exceptions that mean "the user gave something wrong"; each carries a one-line message.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (ConfigError, BadInputError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: ...``) instead of usage plus error."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give an existing parser (e.g. detectron2's ``default_argument_parser()``) one-line errors."""
    if type(parser) is argparse.ArgumentParser:
        parser.__class__ = ArgumentParser
    return parser


def add_config_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--config-file FILE`` and trailing ``KEY VALUE`` overrides (``opts``), as detectron2."""
    parser.add_argument(
        "--config-file", required=required, default="", metavar="FILE", help="YAML config"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")


def _number(kind: type, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``low`` (``--num-images 0`` is an error, not 1000)."""

    def parse(text: str) -> int:
        value = _number(int, text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def float_at_least(low: float, *, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number >= ``low`` (> ``low`` when ``strict``)."""

    def parse(text: str) -> float:
        value = _number(float, text)
        if not (value > low if strict else value >= low) or value != value or value in _INF:
            raise argparse.ArgumentTypeError(
                f"must be a number {'>' if strict else '>='} {low}, got {text}"
            )
        return value

    parse.__name__ = f"number >= {low}"
    return parse


def float_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type``: a number in ``[low, high]``."""

    def parse(text: str) -> float:
        value = _number(float, text)
        if not low <= value <= high:  # NaN fails too
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {text}")
        return value

    parse.__name__ = f"number in [{low}, {high}]"
    return parse


_INF = (float("inf"), float("-inf"))


def name_list(allowed) -> Callable[[str], list[str]]:
    """An argparse ``type``: comma-separated names, each one of ``allowed`` (e.g. levels)."""

    def parse(text: str) -> list[str]:
        names = [x for x in text.replace(" ", "").split(",") if x]
        bad = [x for x in names if x not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, bad)) or 'empty list'} (use {', '.join(allowed)})"
            )
        return names

    parse.__name__ = "list of names"
    return parse


#: An argparse ``type`` for thresholds, probabilities and fractions: a number in [0, 1].
unit_float = float_in(0.0, 1.0)


def error(message: str) -> int:
    """Print ``error: message`` (one line) on stderr and return exit code 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


def setup_logging(output: str | None = None, rank: int = 0) -> logging.Logger:
    """The ``dpsnet`` and ``detectron2`` loggers (to stdout, and under ``output`` if given)."""
    from detectron2.utils.logger import setup_logger

    setup_logger(output=output, distributed_rank=rank, name="detectron2")
    return setup_logger(output=output, distributed_rank=rank, name="dpsnet")


def run(
    main: Callable[..., int | None],
    argv: list[str] | None = None,
    *,
    resume_hint: str = "rerun the same command to continue",
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Call ``main(argv)`` and turn bad input and Ctrl-C into one line and an exit code.

    Args:
        main: the tool's entry point; returns an exit code (``None`` counts as 0).
        argv: its arguments (``None``: ``sys.argv[1:]``).
        resume_hint: what the interrupted message tells the user to do.
        errors: more exception types that mean bad input for this tool.

    Returns:
        ``main``'s code; 2 for ``ConfigError``/``BadInputError`` (and ``errors``); 130 for Ctrl-C.
    """
    try:
        code = main(argv)
    except KeyboardInterrupt as e:
        detail = f": {e}" if str(e) else ""
        print(f"interrupted{detail}; {resume_hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BAD_INPUT_ERRORS + tuple(errors) as e:
        return error(e)
    return EXIT_OK if code is None else int(code)

"""What each CLI subcommand does (argument parsing lives in cli.py)."""
from __future__ import annotations

from .errors import EmoCASTError


def _not_yet(stage: str):
    raise EmoCASTError(f"the {stage} stage is not implemented yet in this build.",
                       hint="Pull the latest version of the pack.")


def demo(args):
    _not_yet("demo pipeline")


def generate(args):
    _not_yet("generation")


def verify_checkpoint(args):
    _not_yet("checkpoint verification")


def convert_checkpoint(args):
    _not_yet("checkpoint conversion")

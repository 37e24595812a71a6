"""One strict matcher for every model file: a state dict against the keys and shapes a model expects.

Each loader (the Net, the VAE, the CLIP text encoder, wav2vec2) declares how a valid file may
differ from its model's state dict (`KeyRules`: key renames such as a `text_model.` prefix, keys the
model does not use such as a CTC head, keys a file may lack); everything else must match exactly.
A mismatch raises one CheckpointError that groups the missing / unexpected / mis-shaped keys (counts
and the first few of each) and, when the keys tell, says which model the file is instead and where
it belongs. Nothing is dropped or left at random initialisation silently: a half-matching file
would otherwise load and produce noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from ..errors import CheckpointError
from ..weights import SHOW

Shapes = Mapping[str, tuple[int, ...]]

#: What a file is, told by its keys: (key prefixes, what it is, its ComfyUI models/ folder). First match wins.
KINDS = (
    (("reference_unet.", "denoising_unet."), "an EmoCAST (or Hallo) Net", "emocast"),
    (("model.diffusion_model.",), "a Stable Diffusion checkpoint", "checkpoints"),
    (("encoder.down_blocks.", "decoder.up_blocks.", "encoder.down.", "first_stage_model."), "an SD VAE", "vae"),
    (("text_model.", "embeddings.token_embedding."), "a CLIP text encoder", "text_encoders"),
    (("feature_extractor.conv_layers.", "wav2vec2.", "encoder.pos_conv_embed."), "a wav2vec2 audio encoder",
     "audio_encoders"),
)


def looks_like(keys) -> tuple[str, str] | None:
    """(what the file is, its models/ folder) from its key names, or None when they do not tell."""
    keys = list(keys)
    for marks, what, folder in KINDS:
        if any(k.startswith(marks) for k in keys):
            return what, folder
    return None


@dataclass(frozen=True)
class KeyRules:
    """How a valid file may differ from the model's state dict.

    renames:  (file prefix, model prefix) pairs, applied in order (each at most once per key).
    ignore:   file keys / key prefixes the model has no use for (heads, a vision tower); only
              keys the model does not expect are ever ignored.
    optional: model keys a file may lack (the model keeps its own value).
    """

    renames: tuple[tuple[str, str], ...] = ()
    ignore: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    def rename(self, key: str) -> str:
        for old, new in self.renames:
            if key.startswith(old):
                key = new + key[len(old):]
        return key


@dataclass(frozen=True)
class LayoutDiff:
    """Keys of a file against the keys a model expects."""

    missing: list[str]
    unexpected: list[str]
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  #: key -> (in file, expected)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)


def compare_layout(found: Shapes, expected: Shapes, optional: tuple[str, ...] = ()) -> LayoutDiff:
    return LayoutDiff([k for k in expected if k not in found and k not in optional],
                      [k for k in found if k not in expected],
                      {k: (tuple(found[k]), tuple(s)) for k, s in expected.items()
                       if k in found and tuple(found[k]) != tuple(s)})


def _group(title: str, items: list[str]) -> str:
    more = f", ... ({len(items) - SHOW} more)" if len(items) > SHOW else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:SHOW]) + more


def layout_message(diff: LayoutDiff, total: int, headline: str) -> str:
    """`headline`: counts, then one line per group with its first few keys."""
    text = (f"{headline}: {len(diff.missing)} of {total} expected entries missing, {len(diff.unexpected)} "
            f"unexpected, {len(diff.mismatched)} with another shape.")
    text += _group("missing", diff.missing) if diff.missing else ""
    text += _group("unexpected", diff.unexpected) if diff.unexpected else ""
    if diff.mismatched:
        text += _group("other shape", [f"{k} {list(a)} in the file, {list(b)} expected"
                                       for k, (a, b) in diff.mismatched.items()])
    return text


Diagnose = Callable[[list, LayoutDiff, str], "tuple[str, str] | None"]


def check_layout(found: Shapes, expected: Shapes, name: str, *, model: str, folder: str, hint: str,
                 optional: tuple[str, ...] = (), diagnose: Diagnose | None = None, note: str = "",
                 stored_keys=None) -> None:
    """Raise one grouped CheckpointError unless `found` {key: shape} has exactly the `expected` layout.

    model / folder: what the slot wants ("SD VAE", "vae"); a file that `looks_like` another kind
    (judged by `stored_keys`, its keys before renames, default `found`'s) is named as such with the
    folder it belongs in. diagnose(keys, diff, name) -> (what, hint) may name a file more precisely
    (the Net's Hallo / AnimateDiff cases). note: a last line for the message.
    """
    diff = compare_layout(found, expected, optional)
    if not diff:
        return
    keys = list(found if stored_keys is None else stored_keys)
    told = diagnose(keys, diff, name) if diagnose else None
    kind = looks_like(keys) if told is None else None
    if kind is not None and kind[1] != folder:
        told = (f"{name} is {kind[0]}, not the {model}", f"Put it in models/{kind[1]}/ (where its loader looks). {hint}")
    what, fix = told or (f"{name} does not have the {model} layout", hint)
    message = layout_message(diff, len(expected), what)
    raise CheckpointError(message + (f"\n  {note}" if note else ""), hint=fix)


def match_state_dict(sd: Mapping[str, torch.Tensor], expected: Shapes, name: str, rules: KeyRules = KeyRules(), *,
                     model: str, folder: str, hint: str, note: Callable[[dict], str] | None = None,
                     stored_keys=None) -> dict[str, torch.Tensor]:
    """The file's tensors renamed to the model's keys, strictly checked (see `check_layout`).

    Returns exactly the expected keys the file has (only `rules.optional` ones may be absent).
    note(renamed state dict) -> a sentence for the error (e.g. the width the file has).
    stored_keys: the keys as the file has them, when the loader converted them before (default `sd`'s).
    """
    renamed = {}
    for key, value in sd.items():
        new = rules.rename(key)
        if rules.ignore and new not in expected and new.startswith(rules.ignore):
            continue
        renamed[new] = value
    found = {k: tuple(v.shape) for k, v in renamed.items()}
    if compare_layout(found, expected, rules.optional):
        check_layout(found, expected, name, model=model, folder=folder, hint=hint, optional=rules.optional,
                     note=note(renamed) if note else "",
                     stored_keys=list(sd if stored_keys is None else stored_keys))
    return renamed

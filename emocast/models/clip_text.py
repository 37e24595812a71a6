"""The CLIP ViT-L/14 text encoder exactly as the authors call it, and prompts -> EmotionConditioning.

The authors tokenise the prompt and "" separately, pad with <|endoftext|> to 77, run the text
model with input_ids *and* attention_mask (padding is masked as keys) and keep last_hidden_state
(after the final layer norm, not pooled). Eager attention reproduces their outputs bit for bit on
transformers 4 and 5 (5's default SDPA differs by ~2e-6). Compute is always fp32, whatever the
file stores, and each prompt runs alone (batch 1) as theirs does.

Prompts over 75 tokens keep the first 75 (plus start and end tokens) and log a warning naming the
count and the dropped words: the authors' code crashes there, and ComfyUI users expect long
prompts to work (core CLIP chunks them instead; one 77-token window is all this model was
trained with).

Weights load from local paths only: a Hugging Face folder (config.json + model.safetensors, a
CLIPTextModel or a full CLIPModel) or one file as ComfyUI has it (models/text_encoders/
clip_l.safetensors; `text_model.` prefix optional; fp16/bf16/fp32). A single file uses the
bundled ViT-L/14 config unless a `<file stem>.json` sidecar sits next to it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import bundled_config
from ..conditioning import EmotionConditioning, EmotionKeyframe
from ..emotion.presets import NEUTRAL_PROMPT
from ..emotion.schedule import EmotionSchedule, KeyframeSpec
from ..weights import Download, locate, read_state_dict
from . import ModelWrapper
from .loading import KeyRules, match_state_dict

log = logging.getLogger("EmoCAST")

MODEL_URL = "https://huggingface.co/openai/clip-vit-large-patch14"
CLIP_FILE = Download("model.safetensors", MODEL_URL)
WHERE_TO_GET = (f"Put ComfyUI's clip_l.safetensors in models/text_encoders/, or download {MODEL_URL} "
                "(config.json + model.safetensors) and give its folder.")
TOKENIZER_DIR = Path(__file__).resolve().with_name("clip_tokenizer")
#: CLIP's context: start token, 75 prompt tokens, end token.
MAX_TOKENS = 77
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: `text_model.` prefix optional; keys some CLIP files carry that the text model does not use.
KEY_RULES = KeyRules(renames=(("text_model.", ""),),
                     ignore=("text_projection.weight", "logit_scale", "visual_projection.weight",
                             "embeddings.position_ids", "vision_model."))


def default_config() -> dict:
    """The real CLIP ViT-L/14 text config (openai/clip-vit-large-patch14)."""
    return bundled_config("clip_vit_large_patch14_text.json")


def load_tokenizer():
    """The bundled CLIP BPE tokenizer (from_pretrained: transformers 5 builds a broken one from file args)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), model_max_length=MAX_TOKENS, local_files_only=True)


class TextEncoder(ModelWrapper):
    """prompt -> [77, 768] CLIP last_hidden_state, float32 on the CPU."""

    def __init__(self, model, tokenizer):
        self.model = model.float().eval().requires_grad_(False)
        self.tokenizer = tokenizer

    def tokenize(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids and attention_mask, each [1, 77] (long prompts truncated with a warning)."""
        ids = self.tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) > MAX_TOKENS - 2:
            log.warning("emotion prompt has %d tokens; CLIP reads the first %d and ignores %r.", len(ids),
                        MAX_TOKENS - 2, self.tokenizer.decode(ids[MAX_TOKENS - 2:]))
        enc = self.tokenizer(prompt, max_length=MAX_TOKENS, padding="max_length", truncation=True,
                             return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    @torch.no_grad()
    def embed(self, prompt: str) -> torch.Tensor:
        """[77, 768] last_hidden_state of one prompt."""
        ids, mask = self.tokenize(prompt)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        return out.last_hidden_state[0].float().cpu()

    def encode(self, emotion: str | EmotionSchedule, neutral_prompt: str = NEUTRAL_PROMPT) -> EmotionConditioning:
        """Conditioning for one prompt or a schedule; each distinct prompt, "" (and neutral if needed) runs once."""
        schedule = emotion
        if not isinstance(schedule, EmotionSchedule):
            schedule = EmotionSchedule((KeyframeSpec(0.0, emotion),), transition_s=0.0)
        scaled = any(k.intensity != 1.0 for k in schedule.keyframes)
        prompts = [k.prompt for k in schedule.keyframes] + [""] + ([neutral_prompt] if scaled else [])
        emb = {p: self.embed(p) for p in dict.fromkeys(prompts)}
        keyframes = tuple(EmotionKeyframe(k.time_s, emb[k.prompt], k.intensity, k.prompt) for k in schedule.keyframes)
        return EmotionConditioning(keyframes, emb[""], emb[neutral_prompt] if scaled else None, schedule.transition_s)


def load_text_encoder(path: str | Path, device: str | torch.device = "cpu") -> TextEncoder:
    """CLIP text encoder from a local folder or file, with eager attention, computing in fp32."""
    from transformers import CLIPTextConfig, CLIPTextModel

    weights, config = locate(path, FOLDER_WEIGHTS, default_config, what="CLIP ViT-L/14 text encoder",
                             hint=WHERE_TO_GET)
    if config.get("model_type") == "clip":  # a full CLIPModel's folder
        config = config.get("text_config", config)
    config = CLIPTextConfig.from_dict({k: v for k, v in config.items() if not k.startswith("_")})
    config._attn_implementation = "eager"
    with torch.device("meta"):
        model = CLIPTextModel(config)
    text = getattr(model, "text_model", model)  # transformers 4 nests the transformer; 5 flattens it
    expected = {k: tuple(v.shape) for k, v in text.state_dict().items()}
    sd = match_state_dict(read_state_dict(weights, CLIP_FILE), expected, weights.name, KEY_RULES,
                          model="CLIP text encoder", folder="text_encoders",
                          hint=f"{WHERE_TO_GET} Another architecture needs its config as a '<file stem>.json' "
                               "next to the file.")
    text.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    text.embeddings.position_ids = torch.arange(config.max_position_embeddings).expand(1, -1)
    log.info("CLIP text encoder loaded from %s (%d layers).", weights, config.num_hidden_layers)
    return TextEncoder(model.to(device), load_tokenizer())

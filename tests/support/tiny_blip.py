"""A tiny random-weight BLIP captioning model, built in code and saved as SDBOT_DESCRIBE_MODEL expects it.

The layout follows Salesforce/blip-image-captioning-base: an uncased BERT vocabulary plus `[DEC]`, the token the
decoder starts from (the text config's bos_token_id), and `[SEP]` as the token that ends a caption (its
sep_token_id, which BLIP's generate passes as eos). The vocabulary is whole words only, so any caption the random
weights produce decodes to real, space-separated words.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
)

SIDE = 32
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
WORDS = (
    "a an the of in on with and at by near under over cat dog man woman child bird horse car boat house tree"
    " flower mountain river sky city street field beach forest castle robot dragon red blue green golden silver"
    " dark bright old young small large sitting standing running flying painting photo portrait landscape night"
    " sunset snow rain light shadow"
).split()


def save_tiny_blip(folder: Path, seed: int = 0, words: Sequence[str] = WORDS, end_bias: float = 1.0) -> Path:
    """Write a tiny BlipForConditionalGeneration (safetensors) and its BlipProcessor into `folder`. Its captions use
    only `words` (and special tokens, which decode to nothing); `end_bias` raises the odds of `[SEP]`, the end."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIALS + list(words)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # From the folder, not BertTokenizer(vocab_file=…): transformers 5 ignores that keyword, leaving a tokenizer that
    # knows only the special tokens.
    tokenizer = BertTokenizer.from_pretrained(folder, bos_token="[DEC]", local_files_only=True)
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "pad_token_id": vocab.index("[PAD]"),
            "bos_token_id": vocab.index("[DEC]"),
            "sep_token_id": vocab.index("[SEP]"),
            "eos_token_id": vocab.index("[SEP]"),
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "image_size": SIDE,
            "patch_size": 16,
        },
        projection_dim=16,
        image_text_hidden_size=16,
    )
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Random weights seldom pick [SEP] and run every caption to the token limit; a nudge ends them after a few
        # words, as a real model's are, which keeps beam search quick.
        model.text_decoder.cls.predictions.bias[vocab.index("[SEP]")] = end_bias
    model.save_pretrained(folder, safe_serialization=True)
    image_processor = BlipImageProcessor(size={"height": SIDE, "width": SIDE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder

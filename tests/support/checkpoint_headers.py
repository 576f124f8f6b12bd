"""Header-only safetensors files: the JSON header of a real checkpoint family's indicative keys, no tensor data.

Family detection must read only the header, so these stand in for multi-gigabyte files.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

UNET_ATTN2 = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"

# Each family's tell-tale keys and shapes, as in the released checkpoints.
SD1_KEYS: dict[str, list[int]] = {
    "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
    UNET_ATTN2: [320, 768],
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": [49408, 768],
    "first_stage_model.decoder.conv_out.weight": [3, 128, 3, 3],
}
SD2_KEYS: dict[str, list[int]] = {
    "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
    UNET_ATTN2: [320, 1024],
    "cond_stage_model.model.token_embedding.weight": [49408, 1024],
    "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": [3072, 1024],
    "first_stage_model.decoder.conv_out.weight": [3, 128, 3, 3],
}
SDXL_KEYS: dict[str, list[int]] = {
    "model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3],
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": [640, 2048],
    "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": [49408, 768],
    "conditioner.embedders.1.model.token_embedding.weight": [49408, 1280],
    "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": [3840, 1280],
    "first_stage_model.decoder.conv_out.weight": [3, 128, 3, 3],
}
LORA_KEYS: dict[str, list[int]] = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 320, 1, 1]}


def write_header_only(path: Path, shapes: dict[str, list[int]], metadata: dict[str, str] | None = None) -> Path:
    """A safetensors header naming fp16 tensors of these shapes; the data itself is left out."""
    header: dict[str, object] = {}
    offset = 0
    for key, shape in shapes.items():
        size = 2
        for side in shape:
            size *= side
        header[key] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path

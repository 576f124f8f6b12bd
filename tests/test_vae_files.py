"""External VAE files as A1111 uses them: listed, found beside a checkpoint, checked without torch, hashed, loaded
from the original (LDM) layout and decoding on a loaded pipeline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from core.checkpoint_header import CONFIGS, Family
from core.source import parse_source
from core.vae_files import (
    VaeError,
    VaeFamily,
    VaeFolder,
    beside,
    check_vae_for,
    is_beside_vae,
    vae_family,
    vae_hash,
)
from engine.loading import LoadedModel, load_model
from engine.vae import load_vae, swap_vae
from tests.support.device import TEST_DEVICE
from tests.support.ldm_checkpoint import VAE_PREFIX, to_ldm_state_dict
from tests.support.tiny_model import NATIVE_SIZE, build_tiny_vae

SDXL_SPEC = {"modelspec.architecture": "stable-diffusion-xl-v1-base/vae"}


def ldm_vae_state(vae: AutoencoderKL, prefix: str = "") -> dict[str, torch.Tensor]:
    """The VAE's weights in the original (LDM) key layout, as VAE files ship, under `prefix`."""
    whole = to_ldm_state_dict({}, {}, vae.state_dict(), dict(vae.config), {}, {"max_position_embeddings": 1})
    return {prefix + k.removeprefix(VAE_PREFIX): v.contiguous() for k, v in whole.items() if k.startswith(VAE_PREFIX)}


def save_vae(vae: AutoencoderKL, path: Path, metadata: dict[str, str] | None = None, prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_vae_state(vae, prefix), str(path), metadata=metadata)
    return path


@dataclass(frozen=True)
class NotWeights:
    """Something a weights-only unpickler must refuse."""

    text: str


@pytest.fixture(scope="module")
def external() -> AutoencoderKL:
    """A VAE with other weights than the tiny model's own, as a community VAE differs from a checkpoint's."""
    torch.manual_seed(1234)
    return build_tiny_vae().eval()


@pytest.fixture(scope="module")
def vae_file(external: AutoencoderKL, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_vae(external, tmp_path_factory.mktemp("VAE") / "vae-ft-tiny-ema-pruned.safetensors")


@pytest.fixture(scope="module")
def config(external: AutoencoderKL) -> dict[str, Any]:
    """The tiny model's VAE config, as the engine passes a loaded model's own."""
    return dict(external.config)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> LoadedModel:
    return load_model(parse_source(str(tiny_model_dir)), TEST_DEVICE)


def test_the_folder_lists_vae_files_by_file_name(tmp_path: Path) -> None:
    for name in ("vae-ft-mse-840000-ema-pruned.safetensors", "kl-f8-anime2.ckpt", "orangemix.vae.pt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".partial.safetensors").write_bytes(b"x")
    (tmp_path / "sub.safetensors").mkdir()
    assert VaeFolder(tmp_path).files() == {
        "kl-f8-anime2.ckpt": tmp_path / "kl-f8-anime2.ckpt",
        "orangemix.vae.pt": tmp_path / "orangemix.vae.pt",
        "vae-ft-mse-840000-ema-pruned.safetensors": tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors",
    }
    assert VaeFolder(tmp_path / "missing").files() == {}


def test_a_checkpoints_own_vae_lies_beside_it(tmp_path: Path) -> None:
    checkpoint = tmp_path / "anything-v3.safetensors"
    checkpoint.write_bytes(b"x")
    assert beside(checkpoint) is None
    (tmp_path / "anything-v3.vae.pt").write_bytes(b"x")
    assert beside(checkpoint) == tmp_path / "anything-v3.vae.pt"
    (tmp_path / "anything-v3.vae.safetensors").write_bytes(b"x")
    assert beside(checkpoint) == tmp_path / "anything-v3.vae.safetensors"  # the one that loads without unpickling
    assert is_beside_vae(tmp_path / "anything-v3.vae.safetensors")
    assert is_beside_vae(tmp_path / "Anything-V3.VAE.CKPT")
    assert not is_beside_vae(checkpoint)


def test_an_sd_shaped_vae_of_no_stated_family_is_allowed_with_any_model(vae_file: Path) -> None:
    assert vae_family(vae_file) is None
    for family in Family:
        check_vae_for(vae_file, family)


def test_the_family_comes_from_model_spec_metadata_then_the_name(external: AutoencoderKL, tmp_path: Path) -> None:
    spec = save_vae(external, tmp_path / "plain.safetensors", SDXL_SPEC)
    assert vae_family(spec) is VaeFamily.SDXL
    sd = save_vae(external, tmp_path / "sdxl-named.safetensors", {"modelspec.architecture": "stable-diffusion-v1/vae"})
    assert vae_family(sd) is VaeFamily.SD  # metadata outranks the name
    named = save_vae(external, tmp_path / "sdxl_vae.safetensors")
    assert vae_family(named) is VaeFamily.SDXL
    assert vae_family(save_vae(external, tmp_path / "vae-xl-fp16-fix.safetensors")) is VaeFamily.SDXL
    assert vae_family(save_vae(external, tmp_path / "pixel-art.safetensors")) is None


def test_a_vae_of_another_family_is_refused_in_one_line_naming_the_file(
    external: AutoencoderKL, tmp_path: Path
) -> None:
    sdxl = save_vae(external, tmp_path / "vae" / "sdxl_vae.safetensors")
    with pytest.raises(VaeError) as refused:
        check_vae_for(sdxl, Family.SD1)
    assert str(refused.value) == f"{sdxl}: an SDXL VAE; this model is SD 1.x"
    check_vae_for(sdxl, Family.SDXL)
    sd = save_vae(external, tmp_path / "vae" / "sd.safetensors", {"modelspec.architecture": "stable-diffusion-v1/vae"})
    check_vae_for(sd, Family.SD2_BASE)
    with pytest.raises(VaeError, match=r"sd\.safetensors: an SD 1\.x/2\.x VAE; this model is SDXL$"):
        check_vae_for(sd, Family.SDXL)


def test_sixteen_channel_latents_are_refused(tmp_path: Path) -> None:
    flux_like = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=16,
        norm_num_groups=8,
    )
    path = save_vae(flux_like, tmp_path / "ae.safetensors")
    with pytest.raises(VaeError) as refused:
        vae_family(path)
    assert str(refused.value) == f"{path}: 16-channel latents (SD3/Flux); this bot's models use 4"


def test_what_is_no_vae_is_refused_in_one_line(tmp_path: Path, config: dict[str, Any]) -> None:
    garbage = tmp_path / "half-downloaded.safetensors"
    garbage.write_bytes(b"\x00\xff" * 4096)
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    for path, reason in ((garbage, "not a safetensors file"), (lora, "not a VAE")):
        with pytest.raises(VaeError) as refused:
            vae_family(path)
        assert str(refused.value).startswith(f"{path}: {reason}")
        with pytest.raises(VaeError) as refused_load:
            load_vae(path, allow_pickle=False, dtype=torch.float32, device=TEST_DEVICE, config=config)
        assert str(refused_load.value) == str(refused.value)
        assert "\n" not in str(refused.value)


def test_the_hash_is_a1111s_first_ten_hex_digits_of_the_files_sha256(vae_file: Path) -> None:
    assert vae_hash(vae_file) == hashlib.sha256(vae_file.read_bytes()).hexdigest()[:10]


def _same_weights(loaded: AutoencoderKL, source: AutoencoderKL) -> None:
    expected = source.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for key, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor.cpu(), expected[key], rtol=0, atol=0, msg=key)


def test_an_ldm_layout_file_loads_as_the_vae_it_was_written_from(
    vae_file: Path, external: AutoencoderKL, config: dict[str, Any]
) -> None:
    loaded = load_vae(vae_file, allow_pickle=False, dtype=torch.float32, device=TEST_DEVICE, config=config)
    _same_weights(loaded, external)
    assert loaded.config.scaling_factor == external.config.scaling_factor


def test_a_whole_checkpoints_vae_loads_without_its_prefix(
    external: AutoencoderKL, config: dict[str, Any], tmp_path: Path
) -> None:
    path = save_vae(external, tmp_path / "model.vae.safetensors", prefix="first_stage_model.")
    assert vae_family(path) is None
    _same_weights(load_vae(path, allow_pickle=False, dtype=torch.float32, device=TEST_DEVICE, config=config), external)


def test_a_vae_missing_weights_is_refused(external: AutoencoderKL, config: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "encoder-only.safetensors"
    save_file({k: v for k, v in ldm_vae_state(external).items() if k.startswith("encoder.")}, str(path))
    with pytest.raises(
        VaeError, match=r"encoder-only\.safetensors: not a whole VAE \(\d+ of its tensors are missing, decoder"
    ):
        load_vae(path, allow_pickle=False, dtype=torch.float32, device=TEST_DEVICE, config=config)


def test_a_vae_of_other_shapes_than_the_models_is_refused(vae_file: Path) -> None:
    """The tiny VAE against the SD 1.5 VAE config that ships for single files."""
    with pytest.raises(VaeError) as refused:
        load_vae(
            vae_file,
            allow_pickle=False,
            dtype=torch.float32,
            device=TEST_DEVICE,
            config=AutoencoderKL.load_config(str(CONFIGS / "sd15"), subfolder="vae"),
        )
    assert str(refused.value) == (
        f"{vae_file}: not this model's VAE (encoder.conv_in.weight is (16, 3, 3, 3), the model's (128, 3, 3, 3))"
    )


def test_a_diffusers_layout_file_loads_as_it_is(
    external: AutoencoderKL, config: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in external.state_dict().items()}, str(path))
    _same_weights(load_vae(path, allow_pickle=False, dtype=torch.float32, device=TEST_DEVICE, config=config), external)


def test_a_pickle_vae_loads_only_when_allowed(external: AutoencoderKL, config: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "kl-f8-anime2.ckpt"
    # As A1111's VAE files from training carry them: the discriminator's weights and EMA counters.
    leftovers = {"loss.discriminator.main.0.weight": torch.zeros(8, 3, 4, 4), "model_ema.decay": torch.tensor(0.99)}
    torch.save({"state_dict": ldm_vae_state(external) | leftovers}, path)
    with pytest.raises(VaeError) as refused:
        load_vae(path, allow_pickle=False, dtype=torch.float32, device=TEST_DEVICE, config=config)
    assert str(refused.value).startswith(f"{path}: a pickle VAE (.pt/.ckpt), which can run code when loaded")
    loaded = load_vae(path, allow_pickle=True, dtype=torch.float32, device=TEST_DEVICE, config=config)
    _same_weights(loaded, external)


def test_a_pickle_holding_more_than_weights_is_not_unpickled(
    external: AutoencoderKL, config: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "trojan.pt"
    torch.save({"state_dict": ldm_vae_state(external), "payload": NotWeights("runs code")}, path)
    with pytest.raises(VaeError, match=r"trojan\.pt: cannot be read as plain weights"):
        load_vae(path, allow_pickle=True, dtype=torch.float32, device=TEST_DEVICE, config=config)


def _draw(model: LoadedModel) -> np.ndarray:
    generator = torch.Generator().manual_seed(7)
    return model.pipe(
        "a lighthouse",
        num_inference_steps=2,
        height=NATIVE_SIZE,
        width=NATIVE_SIZE,
        generator=generator,
        output_type="np",
    ).images


def test_the_pipeline_decodes_with_the_external_vae_and_back(
    model: LoadedModel, vae_file: Path, external: AutoencoderKL, config: dict[str, Any]
) -> None:
    own = _draw(model)
    latents = model.pipe(
        "a lighthouse",
        num_inference_steps=2,
        height=NATIVE_SIZE,
        width=NATIVE_SIZE,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    ).images
    vae = load_vae(vae_file, allow_pickle=False, dtype=model.dtype, device=TEST_DEVICE, config=config)
    previous = swap_vae(model.pipe, vae)
    try:
        assert model.pipe.vae is vae
        swapped = _draw(model)
        with torch.no_grad():
            scaled = latents.to("cpu", torch.float32) / external.config.scaling_factor
            direct = external.decode(scaled, return_dict=False)[0]
        expected = model.pipe.image_processor.postprocess(direct, output_type="np")
    finally:
        assert swap_vae(model.pipe, previous) is vae
    assert np.abs(swapped - own).max() > 0.05
    # The reference decodes in fp32 on the CPU; a GPU engine decodes in fp16.
    np.testing.assert_allclose(swapped, expected, atol=1e-6 if model.dtype == torch.float32 else 1e-2)
    np.testing.assert_array_equal(_draw(model), own)


def test_a_swapped_vae_takes_the_pipelines_dtype(model: LoadedModel, vae_file: Path, config: dict[str, Any]) -> None:
    vae = load_vae(vae_file, allow_pickle=False, dtype=torch.float16, device=TEST_DEVICE, config=config)
    assert vae.dtype == torch.float16
    previous = swap_vae(model.pipe, vae)
    swap_vae(model.pipe, previous)
    assert vae.dtype == model.pipe.unet.dtype == model.dtype

"""The models folder, read without torch: families from safetensors headers, sidecars, names, pickles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.catalog import Catalog, CatalogError, UnknownModel, scan
from core.checkpoint_header import Family, HeaderError, detect_family, read_header
from core.sidecar import ModelDefaults, SidecarError, read_sidecar
from tests.support.checkpoint_headers import LORA_KEYS, SD1_KEYS, SD2_KEYS, SDXL_KEYS, write_header_only


@pytest.mark.parametrize(
    ("keys", "metadata", "family"),
    [
        (SD1_KEYS, None, Family.SD1),
        (SD2_KEYS, None, Family.SD2),
        (SD2_KEYS, {"modelspec.architecture": "stable-diffusion-v2-512-base"}, Family.SD2_BASE),
        (SD2_KEYS, {"modelspec.prediction_type": "epsilon"}, Family.SD2_BASE),
        (SD2_KEYS, {"modelspec.prediction_type": "v"}, Family.SD2),
        (SDXL_KEYS, None, Family.SDXL),
    ],
)
def test_family_from_the_header(tmp_path: Path, keys: dict, metadata: dict | None, family: Family) -> None:
    path = write_header_only(tmp_path / "model.safetensors", keys, metadata)
    assert detect_family(read_header(path)) is family


def test_sd2_is_told_by_the_unet_width_alone(tmp_path: Path) -> None:
    """A checkpoint saved without its text encoder still has the UNet's 1024-wide cross-attention."""
    unet_only = {k: v for k, v in SD2_KEYS.items() if k.startswith("model.")}
    assert detect_family(read_header(write_header_only(tmp_path / "a.safetensors", unet_only))) is Family.SD2
    sd1_unet = {k: v for k, v in SD1_KEYS.items() if k.startswith("model.")}
    assert detect_family(read_header(write_header_only(tmp_path / "b.safetensors", sd1_unet))) is Family.SD1


def test_native_sizes() -> None:
    assert [f.native for f in Family] == [512, 768, 512, 1024]


def test_header_reading_does_not_need_the_data(tmp_path: Path) -> None:
    path = write_header_only(tmp_path / "big.safetensors", SDXL_KEYS)
    header = read_header(path)
    assert header.shapes["conditioner.embedders.1.model.token_embedding.weight"] == (49408, 1280)
    assert path.stat().st_size < 4096  # the tensors it names would be gigabytes


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short"),
        (b"\xff" * 8 + b"{}", "header length out of range"),
        ((5).to_bytes(8, "little") + b"nope!", "not JSON"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(HeaderError, match=message):
        read_header(path)


def test_a_lora_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(HeaderError, match="not a Stable Diffusion checkpoint"):
        detect_family(read_header(write_header_only(tmp_path / "lora.safetensors", LORA_KEYS)))


def test_detection_imports_no_torch(tmp_path: Path) -> None:
    """The bot reads the catalog too, and the bot never imports torch."""
    write_header_only(tmp_path / "m" / "xl.safetensors", SDXL_KEYS)
    code = (
        "import sys; from pathlib import Path; from core.catalog import scan; "
        f"print(scan(Path({str(tmp_path / 'm')!r})).entries['xl'].family.value, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["sdxl", "False"]


def test_sidecar_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        json.dumps({"steps": 25, "cfg": 6, "sampler": "Euler a", "clip_skip": 2, "description": "anime, pastel"})
    )
    (tmp_path / "b.toml").write_text('width = 768\nheight = 1024\nnegative_prompt = "lowres, blurry"\n')
    assert read_sidecar(tmp_path / "a.json") == ModelDefaults(
        steps=25, cfg=6.0, sampler="Euler a", clip_skip=2, description="anime, pastel"
    )
    assert read_sidecar(tmp_path / "b.toml") == ModelDefaults(width=768, height=1024, negative_prompt="lowres, blurry")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"clip_skip": "two"}', "clip_skip must be a whole number from 1 to 12, not 'two'"),
        ('{"steps": 0}', "steps must be a whole number from 1 to 100, not 0"),
        ('{"width": 500}', "width must be a whole number from 64 to 1536, a multiple of 8, not 500"),
        ('{"cfg": true}', "cfg must be a number from 1 to 30, not True"),
        ('{"sampler": "k_euler"}', "sampler must be one of Euler a, "),
        ('{"description": "two\\nlines"}', "description must be one line of text"),
        ('{"prediction": "x"}', "prediction must be one of v, epsilon"),
        ('{"step": 20}', "unknown key 'step'; the keys are cfg, clip_skip,"),
        ("[1, 2]", "must hold an object of settings"),
        ("{steps: 20}", "not valid JSON"),
    ],
)
def test_bad_sidecar_is_one_line_naming_file_and_key(tmp_path: Path, content: str, message: str) -> None:
    sidecar = tmp_path / "model.json"
    sidecar.write_text(content)
    with pytest.raises(SidecarError) as caught:
        read_sidecar(sidecar)
    assert str(caught.value).startswith(f"{sidecar}: {message}")
    assert "\n" not in str(caught.value)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    sidecar = tmp_path / "model.toml"
    sidecar.write_text("steps = = 3\n")
    with pytest.raises(SidecarError, match=r"model\.toml: not valid TOML"):
        read_sidecar(sidecar)


@pytest.fixture
def models(tmp_path: Path, tiny_model_dir: Path) -> Path:
    folder = tmp_path / "models"
    write_header_only(folder / "deliberate_v2.safetensors", SD1_KEYS)
    write_header_only(folder / "v2-1_768-ema-pruned.safetensors", SD2_KEYS)
    write_header_only(folder / "sd_xl_base_1.0.safetensors", SDXL_KEYS)
    (folder / "anything-v3.ckpt").write_bytes(b"not unpickled")
    (folder / "anything-v3.json").write_text('{"clip_skip": 2, "description": "anime"}')
    (folder / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    (folder / "preview.png").write_bytes(b"")
    (folder / "not-a-model").mkdir()
    return folder


def test_scan_finds_files_and_folders(models: Path) -> None:
    catalog = scan(models)
    assert catalog.names() == ["anything-v3", "deliberate_v2", "sd_xl_base_1.0", "tiny", "v2-1_768-ema-pruned"]
    families = {name: e.family for name, e in catalog.entries.items()}
    assert families["deliberate_v2"] is Family.SD1 and families["sd_xl_base_1.0"] is Family.SDXL
    assert families["v2-1_768-ema-pruned"] is Family.SD2 and catalog.entries["v2-1_768-ema-pruned"].native == 768
    anything = catalog.entries["anything-v3"]
    assert anything.pickle and anything.defaults.clip_skip == 2 and anything.label() == "anything-v3 — anime"
    assert catalog.entries["tiny"].is_folder and catalog.entries["tiny"].native == 64


def test_sidecar_settles_sd2_prediction(models: Path) -> None:
    (models / "v2-1_768-ema-pruned.toml").write_text('prediction = "epsilon"\n')
    entry = scan(models).entries["v2-1_768-ema-pruned"]
    assert entry.family is Family.SD2_BASE and entry.native == 512


def test_a_folder_sidecar_may_live_inside(models: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "inside" / "tiny"
    folder.parent.mkdir()
    folder.symlink_to(tiny_model_dir, target_is_directory=True)
    assert scan(folder.parent).entries["tiny"].defaults == ModelDefaults()
    (models / "tiny.json").write_text('{"steps": 4}')
    assert scan(models).entries["tiny"].defaults.steps == 4


def test_missing_folder_is_an_empty_catalog(tmp_path: Path) -> None:
    assert scan(tmp_path / "nowhere") == Catalog()


def test_bad_sidecar_stops_the_scan_with_one_line(models: Path) -> None:
    (models / "deliberate_v2.json").write_text('{"steps": "many"}')
    with pytest.raises(CatalogError, match=r"deliberate_v2\.json: steps must be a whole number"):
        scan(models)


def test_files_that_are_no_checkpoint_are_skipped_and_noted(models: Path) -> None:
    write_header_only(models / "add_detail.safetensors", LORA_KEYS)
    (models / "half-downloaded.safetensors").write_bytes(b"\x10")
    catalog = scan(models)
    assert "add_detail" not in catalog.entries and "deliberate_v2" in catalog.entries
    assert catalog.skipped == (
        "add_detail.safetensors: not a Stable Diffusion checkpoint (no UNet in it; a LoRA or an embedding?)",
        "half-downloaded.safetensors: too short to be a safetensors file",
    )


def test_two_sidecars_or_two_models_of_one_name_are_refused(models: Path) -> None:
    (models / "anything-v3.toml").write_text("steps = 3\n")
    with pytest.raises(CatalogError, match="already has the sidecar anything-v3.json; keep only one"):
        scan(models)
    (models / "anything-v3.toml").unlink()
    write_header_only(models / "anything-v3.safetensors", SD1_KEYS)
    with pytest.raises(CatalogError, match="another model is also called anything-v3"):
        scan(models)


def test_unknown_names_get_close_matches(models: Path) -> None:
    catalog = scan(models)
    assert catalog.find("Deliberate_V2").name == "deliberate_v2"
    with pytest.raises(UnknownModel, match=r"no model called `deliberate`: did you mean `deliberate_v2`\?"):
        catalog.find("deliberate")
    with pytest.raises(UnknownModel, match="pick one from the list"):
        catalog.find("zzzzzzzz")


def test_autocomplete_matches_prefix_then_substring_and_description(models: Path) -> None:
    catalog = scan(models)
    assert [e.name for e in catalog.matching("")] == catalog.names()
    assert [e.name for e in catalog.matching("v2")] == ["v2-1_768-ema-pruned", "deliberate_v2"]
    assert [e.name for e in catalog.matching("ANIME")] == ["anything-v3"]


def test_a_name_too_long_for_a_choice_is_not_offered(tmp_path: Path) -> None:
    # Discord refuses a whole autocomplete answer holding a value over 100 characters (a file name, or a worker's
    # model, may be longer): such a model is left out of the choices, the others are still offered.
    long_name = "realistic_" + "v" * 95
    write_header_only(tmp_path / f"{long_name}.safetensors", SD1_KEYS)
    write_header_only(tmp_path / "realisticVision_v51.safetensors", SD1_KEYS)
    assert [e.name for e in scan(tmp_path).matching("real")] == ["realisticVision_v51"]

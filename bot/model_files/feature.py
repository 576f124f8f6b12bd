"""Model files: /sdadmin upscaler (the U button's upscaler) and /sdadmin vae (the VAE for models that name none)."""

from __future__ import annotations

from bot.features import Registry, Shared
from bot.model_files.commands import NONE, PickAdmin, PickSpec, add_pick_command
from bot.model_files.store import Pick
from core.params import LANCZOS

UPSCALER = "The U button runs **{name}** here ({how}), then a light redraw."
VAE = "Models that name no VAE decode with **{name}** here ({how})."


def setup(shared: Shared, registry: Registry) -> None:
    """Add /sdadmin upscaler and /sdadmin vae; read every server's picks at start."""
    upscalers = PickSpec(
        kind=Pick.UPSCALER,
        builtins=(LANCZOS,),
        installed=shared.files.upscaler_names,
        fallback=lambda installed: installed[0] if installed else LANCZOS,
        shows=UPSCALER,
        now="The U button now runs **{name}** here, then a light redraw.",
        none_installed="No upscaler models are installed (SDBOT_UPSCALERS_DIR): Lanczos resizes.",
    )
    vaes = PickSpec(
        kind=Pick.VAE,
        builtins=(NONE,),
        installed=shared.files.vae_names,
        fallback=lambda installed: NONE,
        shows=VAE,
        now="Models that name no VAE now decode with **{name}** here.",
        none_installed="No VAE files are installed (SDBOT_VAE_DIR): each model decodes with its own.",
    )
    for command, description, option, spec in (
        (
            "upscaler",
            "See or set the upscaler the U button runs here",
            ("name", "An installed upscaler, or Lanczos"),
            upscalers,
        ),
        # `/sdadmin vae default:`, as the default VAE is asked for by owners coming from A1111.
        (
            "vae",
            "See or set the default VAE for models that name none here",
            ("default", "An installed VAE, or None (each model's own)"),
            vaes,
        ),
    ):
        actions = PickAdmin(spec, picks=shared.picks, admin=shared.admin, clock=shared.clock)
        add_pick_command(registry.admin_group, command, description, option, actions)
    registry.on_start.append(shared.picks.load)

"""`sdbot`: run the bot, `sdbot worker` to serve this machine's GPUs to a bot through Redis, or `sdbot generate` one
image through the same engine without Discord."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import discord
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.app import SdBot
from bot.fleet.hub import redacted
from bot.fleet.worker import Heartbeat, Worker, WorkerRefused, default_name, wait_for_name
from bot.imagine.command import ImagineOptions
from bot.metrics import MetricsUnavailable
from bot.models.picker import Models
from bot.pipeline.database import Database, StoreError
from bot.pipeline.engine_client import EngineCommand, EngineStartError, JobFailedError, ProcessEngine
from bot.pipeline.engines import Engines, cpu_threads, resolve_devices
from bot.pipeline.images import ImageStore
from bot.pipeline.model_files import ModelFiles
from bot.pipeline.networks import Networks
from bot.settings import SettingError, Settings, configure_logging, load_settings, read_environment
from bot.systemd import notify, starting, watchdog_interval
from core.network_files import NetworkFolder
from core.params import SAMPLERS, InvalidParams
from core.upscaler_files import UpscalerFolder
from core.vae_files import VaeFolder
from core.wire import Progress

log = logging.getLogger("sdbot")

EXIT_CONFIG = 2


class Fatal(Exception):
    """An operator-facing failure: one line on stderr and exit code 2, no traceback."""


def _models(settings: Settings) -> Models:
    return Models(
        catalog=settings.catalog,
        folder=settings.models_dir,
        default_location=settings.model.location,
        allow_pickle=settings.allow_pickle,
        vaes=VaeFolder(settings.vae_dir),
    )


# What the bot's own folders hold, for its local engines: the models, LoRAs, upscalers and VAEs.
Local = tuple[Models, Networks, ModelFiles]


def _engine(settings: Settings, device: str, threads: int | None = None, local: Local | None = None) -> ProcessEngine:
    inpaint = settings.inpaint_model.location if settings.inpaint_model else None
    safety = str(settings.safety_model) if settings.safety_model else None
    command = EngineCommand(
        settings.model.location,
        device,
        settings.max_megapixels,
        inpaint,
        lora_dir=str(settings.lora_dir),
        embeddings_dir=str(settings.embeddings_dir),
        upscalers_dir=str(settings.upscalers_dir),
        vae_dir=str(settings.vae_dir),
        face_model=str(settings.face_model) if settings.face_model else None,
        models_dir=str(settings.models_dir),
        model_cache=settings.model_cache,
        allow_pickle=settings.allow_pickle,
        max_batch=settings.max_batch,
        compile=settings.compile,
        preview_model=str(settings.preview_model) if settings.preview_model else None,
        safety_model=safety,
        threads=threads,
    )
    if local is None:
        return ProcessEngine(command)
    models, loras, files = local
    return ProcessEngine(
        command,
        has=lambda params: models.has_locally(params.model) and loras.local_has(params) and files.local_has(params),
    )


def _engines(settings: Settings, devices: tuple[str, ...], local: Local | None = None) -> Engines:
    """One engine per device (drawing what the bot's own folders hold, of `local`); CPU engines split its cores."""
    threads = cpu_threads(devices.count("cpu"))
    return Engines([_engine(settings, device, threads if device == "cpu" else None, local) for device in devices])


async def run_bot(settings: Settings) -> None:
    """Connect and serve until SIGTERM or SIGINT, then close cleanly."""
    try:
        devices = await resolve_devices(settings.devices)
    except EngineStartError as exc:
        raise Fatal(str(exc)) from None
    models = _models(settings)
    loras = Networks(NetworkFolder(settings.lora_dir))
    files = ModelFiles(UpscalerFolder(settings.upscalers_dir), VaeFolder(settings.vae_dir))
    bot = SdBot(
        database=Database(settings.db_path),
        engines=_engines(settings, devices, (models, loras, files)),
        images=ImageStore(settings.data_dir, settings.keep_days),
        limits=settings.limits,
        guild_ids=settings.guild_ids,
        shutdown_grace=settings.shutdown_grace,
        lora_dir=settings.lora_dir,
        upscalers_dir=settings.upscalers_dir,
        vae_dir=settings.vae_dir,
        describe_model=settings.describe_model,
        models=models,
        owner_ids=settings.owner_ids,
        allow_dms=settings.allow_dms,
        max_loras=settings.max_loras,
        metrics=settings.metrics,
        loras=loras,
        files=files,
        redis_url=settings.redis_url,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
    try:
        async with bot:
            await bot.start(settings.discord_token)
        # start() returns as soon as the gateway is closed; wait for the rest of the shutdown (engine, database).
        await bot.close()
    except discord.LoginFailure:
        raise Fatal(
            "DISCORD_TOKEN was refused by Discord: reset the token in the Developer Portal and update .env"
        ) from None
    except (EngineStartError, MetricsUnavailable) as exc:
        raise Fatal(str(exc)) from None
    except (StoreError, sqlite3.Error) as exc:
        raise Fatal(f"SDBOT_DB {settings.db_path} cannot be used: {exc}") from None


async def run_worker(settings: Settings) -> None:
    """Start this machine's engines and serve them to the bot through SDBOT_REDIS_URL until SIGTERM or SIGINT."""
    if settings.redis_url is None:
        raise Fatal("SDBOT_REDIS_URL is not set: a worker serves the bot through the Redis the bot reads")
    try:
        devices = await resolve_devices(settings.devices)
    except EngineStartError as exc:
        raise Fatal(str(exc)) from None
    if not devices:
        raise Fatal("SDBOT_DEVICE is none: a worker needs a device to draw on")
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5.0, socket_timeout=30.0)
    name = settings.worker_name or default_name(devices)
    engines = _engines(settings, devices)
    try:
        try:
            # Before the model loads (minutes on a GPU): a wrong URL or a taken name is told at once.
            await wait_for_name(redis, name)
        except WorkerRefused as exc:
            raise Fatal(str(exc)) from None
        except (RedisError, OSError) as exc:
            raise Fatal(f"SDBOT_REDIS_URL {redacted(settings.redis_url)} cannot be reached: {exc}") from None
        try:
            await engines.start(on_starting=starting)
        except EngineStartError as exc:
            raise Fatal(str(exc)) from None
        worker = Worker(
            redis,
            name,
            engines,
            heartbeat=Heartbeat(settings.heartbeat_ttl),
            models=_models(settings),
            loras=NetworkFolder(settings.lora_dir),
            embeddings=NetworkFolder(settings.embeddings_dir),
            upscalers=UpscalerFolder(settings.upscalers_dir),
            vaes=VaeFolder(settings.vae_dir),
        )
        try:
            await worker.register()
        except WorkerRefused as exc:
            raise Fatal(str(exc)) from None
        notify(f"READY=1\nSTATUS=serving as worker {name}")
        await _serve_until_signal(worker, settings.shutdown_grace)
    finally:
        await engines.close()
        await redis.aclose()


async def _serve_until_signal(worker: Worker, grace: float) -> None:
    """Serve until SIGTERM or SIGINT, pinging systemd's watchdog from the event loop; then stop within `grace`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(worker.serve(), name="worker")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    interval = watchdog_interval()
    while not (serving.done() or stopping.done()):
        notify("WATCHDOG=1")
        await asyncio.wait({serving, stopping}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
    notify("STOPPING=1")
    stopping.cancel()
    await worker.stop(grace)
    await asyncio.gather(serving, return_exceptions=True)


async def generate_once(settings: Settings, args: argparse.Namespace) -> None:
    """Load the model in the engine process, draw the images, write them as PNGs with infotext."""
    try:
        model = _models(settings).pick(args.model, None)
        devices = await resolve_devices(settings.devices)
        if not devices:
            raise Fatal("SDBOT_DEVICE is none: sdbot generate draws here, so it needs a device")
        # One image needs one engine: the first device.
        engine = _engine(settings, devices[0])
    except (InvalidParams, EngineStartError) as exc:
        raise Fatal(str(exc)) from None
    try:
        ready = await engine.start()
        options = ImagineOptions(
            prompt=args.prompt,
            negative_prompt=args.negative,
            width=args.width,
            height=args.height,
            steps=args.steps,
            cfg=args.cfg,
            seed=args.seed,
            count=args.count,
            sampler=args.sampler,
            clip_skip=args.clip_skip,
            model=args.model,
        )
        try:
            params = options.to_params(ready, random.SystemRandom(), model)
        except InvalidParams as exc:
            raise Fatal(str(exc)) from None

        def show(progress: Progress) -> None:
            print(f"\rstep {progress.step}/{progress.total}", end="", file=sys.stderr, flush=True)

        try:
            result = await engine.generate("cli", params, show)
        except JobFailedError as exc:
            raise Fatal(str(exc)) from None
        finally:
            print(file=sys.stderr)
    except EngineStartError as exc:
        raise Fatal(str(exc)) from None
    finally:
        await engine.close()
    out: Path = args.output
    for index, image in enumerate(result.images):
        path = out if index == 0 else out.with_name(f"{out.stem}-{index + 1}{out.suffix}")
        path.write_bytes(image.png)
        print(f"wrote {path} (seed {image.seed}, {result.model.name}, {result.seconds:.1f} s on {ready.device})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdbot", description="Stable Diffusion for your Discord server.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="connect to Discord and serve /imagine (the default)")
    commands.add_parser("worker", help="serve this machine's GPUs to the bot through SDBOT_REDIS_URL")
    gen = commands.add_parser("generate", help="draw one image without Discord, to check the model and GPU")
    gen.add_argument("prompt")
    gen.add_argument("-o", "--output", type=Path, default=Path("sdbot.png"), help="PNG to write (default sdbot.png)")
    gen.add_argument("--negative", help="negative prompt")
    gen.add_argument("--seed", type=int)
    gen.add_argument("--steps", type=int)
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--cfg", type=float)
    gen.add_argument("--count", type=int, help="images to draw; the 2nd is written as NAME-2.png and so on")
    gen.add_argument("--sampler", choices=SAMPLERS)
    gen.add_argument("--clip-skip", type=int, help="1 is the text encoder's last layer, 2 the penultimate, …")
    gen.add_argument("--model", help="a model of SDBOT_MODELS_DIR by name (default SDBOT_MODEL); its sidecar applies")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sdbot` console script and `python -m bot`."""
    args = _parser().parse_args(argv)
    cwd = Path.cwd()
    try:
        settings = load_settings(read_environment(cwd), cwd=cwd, require_token=args.command in (None, "run"))
        configure_logging(settings.log_level)
        for skipped in settings.catalog.skipped:
            log.warning("SDBOT_MODELS_DIR: skipped %s", skipped)
        if args.command == "generate":
            asyncio.run(generate_once(settings, args))
        elif args.command == "worker":
            asyncio.run(run_worker(settings))
        else:
            asyncio.run(run_bot(settings))
    except (SettingError, Fatal) as exc:
        print(f"sdbot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return 0

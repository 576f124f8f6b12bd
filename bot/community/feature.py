"""The community: ⭐ Share to the art channel, Read parameters, /history, the weekly digest, and their /sdadmin
settings."""

from __future__ import annotations

from dataclasses import dataclass

from bot.community.admin import add_community_admin_commands
from bot.community.digest import Digest
from bot.community.history import HistoryService, build_history_command
from bot.community.read_params import ReadParamsService, build_read_params_command
from bot.community.sharing import ShareService
from bot.community.store import CommunityStore
from bot.features import Registry, Shared
from bot.results.buttons import ImageAction, JobAction


@dataclass(frozen=True)
class Community:
    """The community's services, as the app keeps them."""

    store: CommunityStore
    sharing: ShareService
    read_params: ReadParamsService
    history: HistoryService
    digest: Digest


def setup(shared: Shared, registry: Registry) -> Community:
    """Add /history, Read parameters and /sdadmin artchannel|digest; answer the share, run and history buttons;
    prune old drafts and post due digests every hour."""
    store = CommunityStore(shared.database)
    sharing = ShareService(
        store=shared.jobs,
        community=store,
        policy=shared.policy,
        sources=shared.sources,
        client=shared.client,
        clock=shared.clock,
    )
    read_params = ReadParamsService(
        intake=shared.intake,
        community=store,
        engine_ready=shared.engine_ready,
        vae_for=lambda guild_id: shared.vae_for(shared.models.pick(None, None), guild_id),
    )
    history = HistoryService(shared.jobs)
    digest = Digest(community=store, client=shared.client, clock=shared.clock)
    registry.commands += [build_history_command(history), build_read_params_command(read_params)]
    add_community_admin_commands(registry.admin_group, community=store, admin=shared.admin, clock=shared.clock)
    registry.presses.update(
        {
            ImageAction.SHARE: sharing.press,
            JobAction.RUN: read_params.run,
            JobAction.HISTORY_NEXT: history.turn,
            JobAction.HISTORY_PREV: history.turn,
        }
    )

    async def prune_drafts() -> int:
        return await store.prune_drafts(shared.clock())

    registry.hourly.update({"pruning drafts": prune_drafts, "the weekly digest": digest.run_due})
    return Community(store=store, sharing=sharing, read_params=read_params, history=history, digest=digest)

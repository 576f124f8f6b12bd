"""A local fake Discord (gateway websocket + REST) that the real discord.py client connects to in tests.

Usage::

    async with FakeDiscord() as fake:                 # starts the server and patches discord.py's URLs
        bot = commands.Bot(commands.when_mentioned, intents=discord.Intents.default(), guild_ready_timeout=0.05)
        async with fake.connected(bot):               # bot.start(fake.token) ... bot.close()
            inter = await fake.slash("imagine", {"prompt": "a cat"})
            cb = await inter.wait_response()

Client notes (checked against discord.py 2.7.1):
- Pass ``guild_ready_timeout=0.05`` (or so): the client fires ``on_ready`` that long after the last GUILD_CREATE
  (default 2 s). The guild cache is filled either way; ``fake.wait_ready()`` proves it.
- ``Intents.default()`` is enough; with the members intent GUILD_CREATE lists every configured member, so the
  guild counts as chunked and no REQUEST_MEMBERS round is needed (op 8 is answered anyway).
- A fresh IDENTIFY after the first one makes the client sleep 5 s in ``before_identify_hook``: prefer RESUME
  (``fake.reconnect_client()``), or override the hook.
- REST 500/502/504/524 are retried by discord.py with 1 s, 3 s, ... sleeps: inject 4xx or 503 instead.
- Close the client before the fake (``connected()`` does), and only after ``on_ready`` has fired, or its
  pending ready task is left behind.

Modules: ``server`` (FakeDiscord: lifecycle, routing, failure injection) over ``actions`` (what users do),
``rest_application``, ``rest_interactions`` and ``rest_channels`` (the REST routes), ``messages`` (message storage),
``gateway`` and ``state``; ``config`` (what a test configures), ``records`` (what the fake records), ``limits``
(Discord's validation), ``wire`` (HTTP shapes), ``components``, ``media`` and ``constants``.
"""

from tests.support.fake_discord.config import (
    FakeChannel,
    FakeFile,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeTeam,
    FakeTeamMember,
    FakeUser,
)
from tests.support.fake_discord.constants import APPLICATION_ID, CHANNEL_ID, GUILD_ID, OWNER_ID, USER_ID
from tests.support.fake_discord.limits import NotOffered
from tests.support.fake_discord.records import (
    FakeCallback,
    FakeFailure,
    FakeInteraction,
    FakeMessage,
    FakeRequest,
    StoredAttachment,
)
from tests.support.fake_discord.server import FakeDiscord

__all__ = [
    "APPLICATION_ID",
    "CHANNEL_ID",
    "GUILD_ID",
    "OWNER_ID",
    "USER_ID",
    "FakeCallback",
    "FakeChannel",
    "FakeDiscord",
    "FakeFailure",
    "FakeFile",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeMessage",
    "FakeRequest",
    "FakeRole",
    "FakeTeam",
    "FakeTeamMember",
    "FakeUser",
    "NotOffered",
    "StoredAttachment",
]

"""Every feature's tables, in the order they are brought up to date (one may refer to an earlier one's)."""

from __future__ import annotations

from bot.community.store import SCHEMA as COMMUNITY
from bot.describe.store import SCHEMA as DESCRIBE
from bot.limits.admin_store import SCHEMA as LIMITS
from bot.member_settings.store import SCHEMA as MEMBER_SETTINGS
from bot.model_files.store import SCHEMA as MODEL_FILES
from bot.models.channel_defaults import SCHEMA as MODELS
from bot.pipeline.database import Schema
from bot.pipeline.store import SCHEMA as JOBS
from bot.policy.store import SCHEMA as POLICY
from bot.styles.store import SCHEMA as STYLES

SCHEMAS: tuple[Schema, ...] = (JOBS, LIMITS, MODELS, POLICY, COMMUNITY, STYLES, MEMBER_SETTINGS, MODEL_FILES, DESCRIBE)

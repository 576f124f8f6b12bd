"""A1111 sampler names → diffusers schedulers, following the equivalence table in diffusers' docs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin


@dataclass(frozen=True)
class SamplerSpec:
    """A scheduler class and the options that make it behave like the A1111 sampler."""

    scheduler: type[SchedulerMixin]
    options: dict[str, Any] = field(default_factory=dict)


SAMPLER_SPECS: dict[str, SamplerSpec] = {
    "Euler a": SamplerSpec(EulerAncestralDiscreteScheduler),
    "Euler": SamplerSpec(EulerDiscreteScheduler),
    "DPM++ 2M": SamplerSpec(DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "DPM++ 2M Karras": SamplerSpec(
        DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}
    ),
    "DPM++ SDE Karras": SamplerSpec(DPMSolverSinglestepScheduler, {"use_karras_sigmas": True}),
    "DDIM": SamplerSpec(DDIMScheduler),
    "UniPC": SamplerSpec(UniPCMultistepScheduler),
}


def make_scheduler(sampler: str, base_config: Any) -> SchedulerMixin:
    """A fresh scheduler for one job (schedulers keep per-run state) over the model's own noise schedule."""
    spec = SAMPLER_SPECS[sampler]
    return spec.scheduler.from_config(base_config, **spec.options)

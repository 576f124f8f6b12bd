"""This bot's samplers as A1111 (1.9 and later) names them: a sampler and a schedule type (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Schedule(str, Enum):
    """A1111's schedule types (modules/sd_schedulers.py) by the label infotext writes; lowered, the member name."""

    AUTOMATIC = "Automatic"
    UNIFORM = "Uniform"
    KARRAS = "Karras"
    EXPONENTIAL = "Exponential"
    POLYEXPONENTIAL = "Polyexponential"
    SGM_UNIFORM = "SGM Uniform"
    KL_OPTIMAL = "KL Optimal"
    ALIGN_YOUR_STEPS = "Align Your Steps"
    SIMPLE = "Simple"
    NORMAL = "Normal"
    DDIM = "DDIM"
    BETA = "Beta"


_ALIASES = {Schedule.SGM_UNIFORM: ("SGMUniform",)}
# Every name A1111 reads for a schedule (label, internal name, aliases), in the order it tries them as a suffix.
_SCHEDULE_NAMES = {name: s for s in Schedule for name in (s.value, s.name.lower(), *_ALIASES.get(s, ()))}


@dataclass(frozen=True)
class A1111Sampler:
    """An A1111 sampler and the schedule it draws; None where the sampler ignores the schedule type."""

    name: str
    schedule: Schedule | None


# engine/samplers.py's schedulers in A1111's terms. Euler's sigmas are the model's own, A1111's Uniform; diffusers'
# DPM++ 2M spaces its timesteps "linspace", which is A1111's SGM Uniform (tests/test_a1111_samplers.py compares
# the sigmas). DDIM and UniPC step through timesteps whatever the schedule (modules/sd_samplers_timesteps.py).
AS_A1111: dict[str, A1111Sampler] = {
    "Euler a": A1111Sampler("Euler a", Schedule.UNIFORM),
    "Euler": A1111Sampler("Euler", Schedule.UNIFORM),
    "DPM++ 2M": A1111Sampler("DPM++ 2M", Schedule.SGM_UNIFORM),
    "DPM++ 2M Karras": A1111Sampler("DPM++ 2M", Schedule.KARRAS),
    "DPM++ SDE Karras": A1111Sampler("DPM++ SDE", Schedule.KARRAS),
    "DDIM": A1111Sampler("DDIM", None),
    "UniPC": A1111Sampler("UniPC", None),
}
_OURS = {(a1111.name, a1111.schedule): ours for ours, a1111 in AS_A1111.items()}
_IGNORE_SCHEDULE = {a1111.name for a1111 in AS_A1111.values() if a1111.schedule is None}

# What Automatic (or no schedule type) means from A1111 1.9 on: the sampler's 'scheduler' option in
# modules/sd_samplers_kdiffusion.py, or the model's own sigmas (Uniform) for a sampler without one.
_AUTOMATIC = {"DPM++ 2M": Schedule.KARRAS, "DPM++ SDE": Schedule.KARRAS}


def sampler_pairs(sampler: str) -> list[tuple[str, str]]:
    """This bot's sampler as infotext pairs: `Sampler`, and `Schedule type` where A1111 would write one."""
    a1111 = AS_A1111[sampler]
    # A1111 names every schedule it draws, Karras too where it is the default, but a sampler's own sigmas
    # (modules/sd_samplers_kdiffusion.py get_sigmas); the timestep samplers draw none.
    if a1111.schedule in (None, Schedule.UNIFORM):
        return [("Sampler", a1111.name)]
    return [("Sampler", a1111.name), ("Schedule type", a1111.schedule.value)]


def from_a1111(sampler: str, schedule: str) -> str | None:
    """This bot's name for an A1111 sampler and schedule type as infotext writes them; None if it has none."""
    name, found = sampler.strip(), _SCHEDULE_NAMES.get(schedule.strip() or Schedule.AUTOMATIC.value)
    # Names from before 1.9 carry the schedule ("DPM++ 2M Karras"): A1111 takes it from there first.
    suffix = next((n for n in _SCHEDULE_NAMES if name.endswith(f" {n}")), None)
    if suffix is not None:
        name, found = name.removesuffix(f" {suffix}"), _SCHEDULE_NAMES[suffix]
    if name in _IGNORE_SCHEDULE:
        return _OURS[(name, None)]
    if found is Schedule.AUTOMATIC:
        found = _AUTOMATIC.get(name, Schedule.UNIFORM)
    return _OURS.get((name, found))

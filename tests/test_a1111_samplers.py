"""Our samplers draw the sigmas of the A1111 schedule type that infotext names for them (engine/a1111_samplers.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from diffusers import PNDMScheduler

from core.a1111_samplers import AS_A1111, Schedule
from core.checkpoint_header import CONFIGS
from engine.samplers import make_scheduler

STEPS = 30
# The noise schedule every SD 1.5 single file loads with (the shipped config, as engine/loading.py uses it).
BASE = PNDMScheduler.from_pretrained(CONFIGS / "sd15", subfolder="scheduler")
MODEL_SIGMAS = np.sqrt((1 - BASE.alphas_cumprod.numpy()) / BASE.alphas_cumprod.numpy()).astype(np.float64)


def t_to_sigma(t: np.ndarray) -> np.ndarray:
    """k-diffusion's DiscreteSchedule.t_to_sigma: log-sigma interpolated between whole timesteps."""
    low = np.floor(t).astype(int)
    high = np.minimum(low + 1, len(MODEL_SIGMAS) - 1)
    weight = t - low
    return np.exp((1 - weight) * np.log(MODEL_SIGMAS[low]) + weight * np.log(MODEL_SIGMAS[high]))


def uniform(n: int) -> np.ndarray:
    """A1111's Uniform: k-diffusion's get_sigmas, n timesteps from the last to the first."""
    return t_to_sigma(np.linspace(len(MODEL_SIGMAS) - 1, 0, n))


def sgm_uniform(n: int) -> np.ndarray:
    """A1111's SGM Uniform (modules/sd_schedulers.py): n + 1 timesteps from the last to the first, less the last."""
    return t_to_sigma(np.linspace(len(MODEL_SIGMAS) - 1, 0, n + 1)[:-1])


def karras(n: int, rho: float = 7.0) -> np.ndarray:
    """k-diffusion's get_sigmas_karras between the model's smallest and largest sigma, as A1111 calls it."""
    ramp = np.linspace(0, 1, n)
    low, high = MODEL_SIGMAS[0] ** (1 / rho), MODEL_SIGMAS[-1] ** (1 / rho)
    return (high + ramp * (low - high)) ** rho


A1111_SCHEDULES: dict[Schedule, Callable[[int], np.ndarray]] = {
    Schedule.UNIFORM: uniform,
    Schedule.SGM_UNIFORM: sgm_uniform,
    Schedule.KARRAS: karras,
}


def drawn(sampler: str) -> np.ndarray:
    scheduler = make_scheduler(sampler, BASE.config)
    scheduler.set_timesteps(STEPS)
    sigmas = np.asarray(scheduler.sigmas, dtype=np.float64)
    assert sigmas[-1] == 0 and len(sigmas) == STEPS + 1
    return sigmas[:-1]


@pytest.mark.parametrize("sampler", [s for s, a1111 in AS_A1111.items() if a1111.schedule is not None])
def test_each_sampler_draws_the_schedule_its_infotext_names(sampler: str) -> None:
    sigmas = np.log(drawn(sampler))
    # diffusers rounds DPM++ 2M's timesteps to whole numbers: its sigmas stay within half a percent.
    distance = {s: np.abs(sigmas - np.log(schedule(STEPS))).max() for s, schedule in A1111_SCHEDULES.items()}
    assert distance[AS_A1111[sampler].schedule] < 0.01, distance
    assert sorted(distance.values())[1] > 0.5, "the other schedules are far off"

"""The context of one Part A job: settings, generator, timesteps, and stage-II upsampling.

A :class:`Job` is what every recipe in :mod:`fundiff.parta` gets. Recipes *keep* their single
results (:meth:`Job.keep`); where a task is upsampled (``fundiff.tasks.upsampled``: DeepFloyd
only), :func:`upsample_kept` runs stage II on them after the recipe, giving ``Job.native``
(name -> 256 px image) that :func:`fundiff.parta.run_task` saves as PNGs.

Stage II comes in two kinds: the plain one (``Job.upsampler``: images, the task's prompt,
generator), and a views-aware one for anagrams and hybrids (``Job.views_upsampler``: images,
:class:`Views`, generator), which runs stage II with the same views/factorization so the
illusion holds at 256 px. Both are built by :func:`fundiff.backends.upsamplers` (DeepFloyd),
which also gives ``Job.free_model``: stage I is freed before stage II runs on kept results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fundiff.errors import FundiffError
from fundiff.runtime import seed_generator
from fundiff.schedules import NoiseSchedule, course_timesteps, scale_timestep

Settings = Mapping[str, Any]
#: plain stage II: (images (N, 3, 64, 64) in [-1, 1], prompt, generator) -> (N, 3, 256, 256)
Upsampler = Callable[[Tensor, str, torch.Generator], Tensor]


@dataclass(frozen=True)
class Views:
    """How an anagram/hybrid was made: one prompt per view (view names from
    :func:`fundiff.views.get_view`, or ``"lowpass"``/``"highpass"`` for hybrids) and the
    hybrid filter (sigma, kernel; None for anagrams)."""

    prompts: tuple[str, ...]
    views: tuple[str, ...]
    filter: tuple[float, int] | None = None


#: views-aware stage II: (images, views, generator) -> 256 px images
ViewsUpsampler = Callable[[Tensor, Views, torch.Generator], Tensor]


@dataclass(frozen=True)
class Kept:
    """One single result kept for stage II: its name, image (C, H, W), prompt and views."""

    name: str
    image: Tensor
    prompt: str
    views: Views | None = None


def strided(schedule: NoiseSchedule, timesteps: Settings) -> list[int]:
    """The strided list (e.g. 990..0 by 30) in the schedule's own T."""
    return course_timesteps(schedule.num_train_timesteps, timesteps["start"], timesteps["stride"])


def to_T(t: int, schedule: NoiseSchedule) -> int:
    """A timestep in 1000-step units mapped to the schedule's T."""
    return scale_timestep(t, schedule.num_train_timesteps)


class Job:
    """What every recipe gets: the denoiser, backend settings, task settings and a generator."""

    def __init__(
        self,
        denoiser: Any,
        backend: Settings,
        settings: Settings,
        *,
        schedule: NoiseSchedule | None = None,
        upsampler: Upsampler | None = None,
        views_upsampler: ViewsUpsampler | None = None,
        free_model: Callable[[], None] | None = None,
        judge: Any = None,
        digit: int | None = None,
    ) -> None:
        self.denoiser = denoiser
        self.schedule = schedule if schedule is not None else denoiser.schedule
        self.backend = backend
        self.settings = settings
        self.upsampler = upsampler
        self.views_upsampler = views_upsampler
        #: frees the denoiser's model once the recipe is done, before stage II runs on the
        #: kept results (a job holds one stage at a time); None: nothing to free
        self.free_model = free_model
        self.judge = judge
        #: the input image's digit (inputs manifest ``digit``), what judged edits should keep
        self.digit = digit
        #: the judged image sets of the job (a :class:`fundiff.metrics.Judged`), saved as .npz
        self.judged: Any = None
        device = getattr(denoiser, "device", "cpu") if denoiser is not None else "cpu"
        self.device = torch.device(device)
        self.generator = seed_generator(backend["seed"], self.device)
        #: single results saved at their native size by name (the 256 px images)
        self.native: dict[str, Tensor] = {}
        #: single 64 px results kept for stage II, in order
        self.kept: list[Kept] = []

    @property
    def timesteps(self) -> list[int]:
        """The backend's strided timesteps in the schedule's T (sampling tasks only)."""
        return strided(self.schedule, self.backend["timesteps"])

    @property
    def kw(self) -> dict[str, Any]:
        """Sampler-loop options from the backend settings (the step's noise variance)."""
        return {"variance": self.backend.get("variance", "model")}

    def loop(self, guidance: bool = True) -> dict[str, Any]:
        """Keywords of a strided sampling loop: generator, timesteps, variance (+ CFG scale)."""
        kw = {"generator": self.generator, "timesteps": self.timesteps, **self.kw}
        return {**kw, "guidance": self.guidance} if guidance else kw

    @property
    def guidance(self) -> float:
        """The CFG scale of this job: the item's ``guidance`` (an illusion, a hybrid pair), else
        the task's, else the backend's (null = not set at that level)."""
        g = self.guidance_set
        if g is None:
            raise FundiffError("this job has no CFG scale (its task takes no guidance)")
        return g

    @property
    def guidance_set(self) -> float | None:
        """:attr:`guidance`, or None for a task that is given no scale (forward, blur)."""
        item = self.settings.get("item")
        for level in (item if isinstance(item, Mapping) else {}, self.settings, self.backend):
            if level.get("guidance") is not None:
                return float(level["guidance"])
        return None

    @property
    def value_range(self) -> tuple[float, float]:
        return tuple(self.backend["value_range"])  # type: ignore[return-value]

    def prompt(self, key: str = "prompt") -> str:
        """The task's prompt, or the backend's base prompt when the task leaves it null."""
        value = self.settings.get(key)
        return self.backend["base_prompt"] if value is None else value

    def keep(
        self, names: Sequence[str], images: Tensor, prompt: str, views: Views | None = None
    ) -> None:
        """Keep single results (N, C, H, W) by name for stage II, which conditions on
        ``prompt`` (or, with ``views``, on each view's prompt: anagrams/hybrids)."""
        if len(names) != len(images):
            raise FundiffError(f"{len(names)} names for {len(images)} results")
        self.kept += [Kept(n, images[i], prompt, views) for i, n in enumerate(names)]


def upsample_kept(job: Job) -> None:
    """Run stage II on the job's kept results (batched per prompt/views) into ``job.native``.

    Does nothing without ``job.upsampler``. Results made with views need the views-aware
    stage II; without one this is an error naming the missing piece. The recipe is done, so
    ``job.free_model`` (if any) runs first: stage II then has the memory to itself.
    """
    if job.upsampler is None or not job.kept:
        return
    if job.free_model is not None:
        job.free_model()
    groups: dict[tuple[str, Views | None], list[Kept]] = {}
    for k in job.kept:
        groups.setdefault((k.prompt, k.views), []).append(k)
    for (prompt, views), kept in groups.items():
        batch = torch.stack([k.image for k in kept]).to(job.device)
        if views is None:
            up = job.upsampler(batch, prompt, job.generator)
        elif job.views_upsampler is None:
            raise FundiffError(
                f"stage II with views {views.views} needs a views-aware upsampler (none given)"
            )
        else:
            up = job.views_upsampler(batch, views, job.generator)
        job.native.update({k.name: up[i] for i, k in enumerate(kept)})

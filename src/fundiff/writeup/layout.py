"""The writeup's section tree in course order, captions, and the routing of result files.

Figures are assigned to sections that follow the course's structure (Part A 0 to 1.9 plus bells &
whistles; Part B 1 to 2.x with DDPM and flow-matching subsections). Anything that matches no known
section still appears, in an "other" section: nothing listed is ever dropped.
"""

from __future__ import annotations

import math
import re

from fundiff.tasks import writeup_sections
from fundiff.writeup.model import ResultKey, Section
from fundiff.writeup.tables import pretty

#: Part A task ids (figure folders) -> section titles, in course order: the task registry's
PART_A_TASKS: dict[str, str] = dict(writeup_sections())

#: Part A backends -> human titles (section headings), in the order a task shows them: the
#: course's model, then the default run's model (the DDPM), then the flow-matching one.
BACKEND_TITLES: dict[str, str] = {
    "deepfloyd": "DeepFloyd IF",
    "local": "Local backend: the MNIST DDPM",
    "local_fm": "Local backend: the MNIST flow-matching model",
}
BACKEND_SHORT: dict[str, str] = {
    "deepfloyd": "DeepFloyd IF",
    "local": "local MNIST DDPM",
    "local_fm": "local MNIST flow-matching model",
}


def backend_order(backend: str) -> tuple[int, str]:
    """Sort key of Part A backends: known ones in :data:`BACKEND_TITLES` order, then others."""
    known = list(BACKEND_TITLES)
    return (known.index(backend), "") if backend in known else (len(known), backend)


#: Part B runs -> (group id, section title), in course order.
PART_B_RUNS: dict[str, tuple[str, str]] = {
    "single_step": ("b1", "1.2.1 Training a single-step denoiser (σ = 0.5)"),
    "pure_noise": ("b1", "1.2.3 Denoising pure noise"),
    "ddpm_time": ("b2_ddpm", "2.1–2.3 Time-conditioned UNet"),
    "ddpm_class": ("b2_ddpm", "2.4–2.5 Class-conditioned UNet with CFG"),
    "fm_time": ("b2_fm", "2.1–2.3 Time-conditioned UNet"),
    "fm_class": ("b2_fm", "2.4–2.6 Class-conditioned UNet with CFG"),
    "fm_class_const": ("b2_fm", "2.6 Getting rid of the LR scheduler"),
}

PART_B_GROUPS: dict[str, str] = {
    "b1": "1. Single-step denoising UNet",
    "b2_ddpm": "2. Diffusion models: DDPM (fall 2024)",
    "b2_fm": "2. Flow matching (fall 2025)",
    "b_classifier": "Evaluation: the judging classifier",
    "b_other": "Other Part B results",
}

RUN_SHORT: dict[str, str] = {
    "single_step": "single-step denoiser",
    "pure_noise": "pure-noise denoiser",
    "ddpm_time": "DDPM, time-conditioned",
    "ddpm_class": "DDPM, class-conditioned",
    "fm_time": "flow matching, time-conditioned",
    "fm_class": "flow matching, class-conditioned",
    "fm_class_const": "flow matching, class-conditioned, constant LR",
}
_EPOCH_RE = re.compile(r"^(?P<stem>[a-z_]+?)_?epoch(?P<epoch>\d+)$")
_SMALL_IMAGE_PX = 200  # images narrower than this are upscaled (pixelated) for display


def epoch_of(name: str) -> tuple[str, int | None]:
    m = _EPOCH_RE.match(name)
    return (m.group("stem"), int(m.group("epoch"))) if m else (name, None)


def caption_b(key: ResultKey, accuracy: str | None) -> tuple[str, str]:
    """Caption and caption kind for a Part B figure."""
    run = RUN_SHORT.get(key.group, pretty(key.group))
    stem, epoch = epoch_of(key.name)
    if key.group == "figures" and key.name == "b1_noising":
        return (
            "Noising process: the same digits (rows) at σ = 0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0.",
            "b1_noising",
        )
    if key.name == "loss":
        return f"Training loss per step ({run}).", "loss"
    if key.name == "ood":
        return (
            f"Out-of-distribution noise levels ({run}, trained at σ = 0.5): "
            "noisy inputs and denoised outputs of one test digit.",
            "ood",
        )
    if key.name == "trajectory":
        return f"Sampling trajectory from noise to digits ({run}).", "trajectory"
    if stem == "denoise" and epoch is not None:
        return (
            f"Test digits after epoch {epoch} ({run}): clean input, noisy (σ = 0.5), output.",
            "denoise",
        )
    if stem == "outputs" and epoch is not None:
        return f"Outputs for pure-noise inputs after epoch {epoch} ({run}).", "outputs"
    if stem == "samples" and epoch is not None:
        acc = f" Judged accuracy {accuracy}." if accuracy else ""
        return f"Samples after epoch {epoch} ({run}).{acc}", "samples"
    return f"{pretty(key.name).capitalize()} ({run}).", "other"


def caption_a(key: ResultKey) -> str:
    task = PART_A_TASKS.get(key.task, pretty(key.task))
    task = re.sub(r"^[0-9.]+\s+|^Bells & whistles:\s*", "", task)
    backend = BACKEND_SHORT.get(key.group, key.group)
    return f"{task[:1].upper()}{task[1:]}: {pretty(key.name)} ({backend})."


# --------------------------------------------------------------------------------------------
# Collect
# --------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def figure_sort_key(key: ResultKey) -> tuple[int, int, str]:
    order = ["b1_noising", "loss", "denoise", "ood", "outputs", "samples", "trajectory"]
    stem, epoch = epoch_of(key.name)
    rank = order.index(stem) if stem in order else len(order)
    return (rank, epoch if epoch is not None else -1, key.name)


def display_size(width: int) -> tuple[int, bool]:
    """Display width and whether to upscale with pixelated rendering (tiny images)."""
    if 0 < width < _SMALL_IMAGE_PX:
        return width * math.ceil(_SMALL_IMAGE_PX / width), True
    return width, False


class Layout:
    """The section tree (course order) and the routing of result files into it."""

    def __init__(self, backends: set[str]) -> None:
        self.backends = backends
        self.part_a = Section("part-a", "Part A: the power of diffusion models", 2)
        self.part_b = Section("part-b", "Part B: training diffusion models on MNIST", 2)
        self.other = Section("other", "Other results", 2)
        if len(backends) == 1:
            (backend,) = backends
            self.part_a.title += f" ({BACKEND_SHORT.get(backend, backend)})"
        self.a_tasks: dict[str, Section] = {}
        for task, title in PART_A_TASKS.items():
            self.a_tasks[task] = Section(f"a-{task}", title, 3)
            self.part_a.children.append(self.a_tasks[task])
        self.b_groups = {g: Section(g, t, 3) for g, t in PART_B_GROUPS.items()}
        self.b_noising = Section("b1-noising", "1.2 Using the UNet to train a denoiser: noising", 4)
        self.b_ood = Section("b1-ood", "1.2.2 Out-of-distribution testing", 4)
        self.b_groups["b1"].children.append(self.b_noising)
        self.b_runs: dict[str, Section] = {}
        for run, (group, title) in PART_B_RUNS.items():
            self.b_runs[run] = Section(f"{group}-{run}", title, 4)
            self.b_groups[group].children.append(self.b_runs[run])
            if run == "single_step":
                self.b_groups["b1"].children.append(self.b_ood)
        self.part_b.children.extend(self.b_groups.values())

    def _a(self, key: ResultKey) -> Section:
        task = self.a_tasks.get(key.task)
        if task is None:  # a task this module does not know yet: shown, never dropped
            task = Section(f"a-{slug(key.task)}", f"Other: {pretty(key.task)}", 3)
            self.a_tasks[key.task] = task
            self.part_a.children.append(task)
        if len(self.backends) <= 1:
            return task
        sid = f"{task.id}-{slug(key.group)}"
        for child in task.children:
            if child.id == sid:
                return child
        child = Section(sid, BACKEND_TITLES.get(key.group, pretty(key.group)), 4, backend=key.group)
        task.children.append(child)
        task.children.sort(key=lambda s: backend_order(s.backend))
        return child

    def _b(self, key: ResultKey) -> Section:
        if key.group == "figures":
            return self.b_noising if key.name == "b1_noising" else self.b_groups["b_other"]
        if key.group == "classifier":
            return self.b_groups["b_classifier"]
        if key.group == "single_step" and key.name == "ood":
            return self.b_ood
        sec = self.b_runs.get(key.group)
        if sec is None:  # an unknown run: its own subsection under "Other Part B results"
            sec = Section(f"b-other-{slug(key.group)}", pretty(key.group), 4)
            self.b_runs[key.group] = sec
            self.b_groups["b_other"].children.append(sec)
        return sec

    def section_for(self, key: ResultKey) -> Section:
        """The section a result file belongs to."""
        if key.part == "A":
            return self._a(key)
        if key.part == "B":
            return self._b(key)
        return self.other

    def sections(self) -> list[Section]:
        """Top-level sections with empty ones pruned."""

        def prune(sections: list[Section]) -> list[Section]:
            kept = []
            for s in sections:
                s.children = prune(s.children)
                if not s.is_empty():
                    kept.append(s)
            return kept

        return prune([self.part_a, self.part_b, self.other])

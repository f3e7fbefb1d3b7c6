"""The trainer's step captured once in a CUDA graph and replayed (``--cuda-graph on``, the default on CUDA).

A step on CUDA is a few hundred small kernels; launched one by one from Python the GPU waits on the host (about
20 ms a step whatever the task on an H100). :class:`~agents.training.step.DeviceStep` does the whole step with no
host sync and static shapes; :class:`GraphedStep` runs its first steps eagerly on a side stream (warm-up: cuBLAS
handles, AdamW's state, the allocator), captures the next one, and from then on copies each batch's image indices
into the graph's static input and replays it. A new location noise (``--loc-std-final`` anneals it by epoch) is a
new capture, since the graph holds the value. The env's own generator, when it lives on the GPU, is registered with
the graph, so its stream goes on across replays (and into ``last.pt``) as an eager run's does; the location noise
draws from the default CUDA generator, which graphs handle themselves.

Eager instead: on the CPU (nothing to gain), with ``--cuda-graph off``, under torch.distributed without NCCL, and
when the capture fails (one printed line says why).
"""

from __future__ import annotations

import torch

from agents.losses import HybridLoss
from agents.rollout import Episodes
from agents.training.distributed import Distributed
from agents.training.step import DeviceStep


class GraphedStep:
    """Call with a batch's image indices (on the device); returns the step's loss and episodes (a graph's static
    tensors once captured: read them before the next step). ``status`` says how the steps ran, for results.json."""

    def __init__(self, step: DeviceStep, mode: str, device: torch.device, dist: Distributed,
                 generator: torch.Generator | None = None) -> None:
        self.step, self.device, self.generator = step, device, generator
        if mode == "off":
            self.status = "off"
        elif device.type != "cuda":
            self.status = "off (eager on the CPU)"
        elif dist.active and "nccl" not in dist.backend:
            self.status = "off (torch.distributed without NCCL: eager)"
        else:
            self.status = "on"
        # DDP wants 11 eager iterations before a capture (its reducer settles its buckets); 3 warm up the rest.
        self.warmup = 11 if dist.active else 3
        self.warmed = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.pool = None
        self.captured_for: float | None = None
        self.static_images: torch.Tensor | None = None
        self.outputs: tuple[HybridLoss, Episodes] | None = None

    def __call__(self, images: torch.Tensor) -> tuple[HybridLoss, Episodes]:
        if self.status != "on":
            return self.step(images)
        noise = self.step.model.config.loc_std  # a Python float the graph holds
        if self.graph is not None and noise != self.captured_for:
            self.graph = None
        if self.graph is None:
            if self.warmed < self.warmup:
                self.warmed += 1
                return self.on_side_stream(images)
            try:
                self.capture(images, noise)
            except Exception as error:  # any failure to capture costs the speed, never the run
                self.graph, self.status = None, f"off (capture failed: {type(error).__name__}: {error})"
                print(f"CUDA graph: the capture failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                      f"training on eagerly")
                return self.step(images)
        self.static_images.copy_(images)
        self.graph.replay()
        return self.outputs

    def on_side_stream(self, images: torch.Tensor) -> tuple[HybridLoss, Episodes]:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            outputs = self.step(images)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return outputs

    def capture(self, images: torch.Tensor, noise: float) -> None:
        graph = torch.cuda.CUDAGraph()
        if self.generator is not None and self.generator.device.type == "cuda":
            graph.register_generator_state(self.generator)
        self.static_images = images.clone()
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph, pool=self.pool):
            self.outputs = self.step(self.static_images)
        self.graph, self.captured_for, self.pool = graph, noise, graph.pool()

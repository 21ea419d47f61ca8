"""The quality study's generator: a small class-conditional latent-style diffusion UNet on Fashion-MNIST.

SD-shaped on purpose: a diffusers ``UNet2DConditionModel`` with ``BasicTransformerBlock`` self- and cross-attention
at the two finest levels, conditioned through cross-attention on one token (a learned class embedding, plus a
"no class" token for classifier-free guidance), run on a 4-channel 16x16 "latent". The latent is the 32x32 image
(28x28 zero-padded, scaled to [-1, 1]) rearranged by a 2x2 pixel-unshuffle: a lossless stand-in for SD's VAE, so
the finest level has 16x16 = 256 tokens, like SD's 64x64 at 1/16 the count. Training: DDPM (cosine schedule,
epsilon prediction), AdamW, EMA weights; sampling: DDIM with classifier-free guidance.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel

CHECKPOINT = Path(__file__).parent / "models" / "diffusion_fashion_unet.safetensors"
NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # the "no class" token of classifier-free guidance
ARCH = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=2,  # diffusers' legacy name: 2 heads (16 channels each at the finest level)
    norm_num_groups=16,
)
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon")
TRAIN = dict(seed=0, batch=32, lr=1e-3, weight_decay=0.01, warmup_steps=100, ema=0.995, p_uncond=0.1)


class Generator(torch.nn.Module):
    """The UNet and the class-token table; ``forward`` predicts the noise of a batch of latents."""

    def __init__(self) -> None:
        super().__init__()
        self.unet = UNet2DConditionModel(**ARCH)
        self.classes = torch.nn.Embedding(NUM_CLASSES + 1, ARCH["cross_attention_dim"])

    def context(self, labels: torch.Tensor) -> torch.Tensor:
        """Cross-attention tokens of class labels (``NULL_CLASS``: none).

        Shapes:
            labels: [B]
            returns: [B, 1, 64]
        """
        return self.classes(labels)[:, None, :]

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(latents, timesteps, encoder_hidden_states=self.context(labels)).sample


def to_latent(images: torch.Tensor) -> torch.Tensor:
    """uint8 28x28 images -> [-1, 1] 32x32 -> 4x16x16 latents.

    Shapes:
        images: [B, 28, 28] uint8
        returns: [B, 4, 16, 16]
    """
    padded = F.pad(images.float() / 127.5 - 1.0, (2, 2, 2, 2), value=-1.0)
    return F.pixel_unshuffle(padded[:, None], 2)


def from_latent(latents: torch.Tensor) -> torch.Tensor:
    """Latents -> [0, 1] 32x32 images.

    Shapes:
        latents: [B, 4, 16, 16]
        returns: [B, 32, 32]
    """
    return ((F.pixel_shuffle(latents, 2)[:, 0] + 1.0) / 2.0).clamp(0.0, 1.0)


def save_generator(model: Generator, record: dict, path: Path = CHECKPOINT) -> None:
    """EMA weights as fp16 safetensors (atomically), the training record as metadata."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"training": json.dumps(record), "arch": json.dumps(ARCH)})
    tmp.chmod(0o644)
    tmp.replace(path)


def load_generator(path: Path = CHECKPOINT) -> tuple[Generator, dict]:
    """The generator in fp32 and eval mode, and its training record."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    model = Generator()
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    with safe_open(str(path), framework="pt") as handle:
        record = json.loads((handle.metadata() or {}).get("training", "{}"))
    return model.eval(), record


def train(
    images: torch.Tensor,
    labels: torch.Tensor,
    minutes: float,
    max_steps: int,
    device: str,
    init: Generator | None = None,
) -> tuple:
    """Train from scratch for ``minutes`` of wall clock (or ``max_steps``): warm-up, then a cosine learning rate over
    the time budget; bf16 autocast (AMX on recent x86 CPUs, tensor cores on CUDA); EMA weights are returned.
    ``init``: weights to start from (a resumed run).

    Shapes:
        images: [N, 28, 28] uint8
        labels: [N] int64
    """
    config = {**TRAIN, "device": device, "minutes": minutes, "arch": ARCH, "schedule": SCHEDULE}
    torch.manual_seed(config["seed"])
    generator = torch.Generator(device=device).manual_seed(config["seed"])
    model = Generator().to(device).train()
    if init is not None:  # resume from earlier (EMA) weights, with a new warm-up and cosine
        model.load_state_dict(init.state_dict())
    ema = Generator().to(device).eval()
    ema.load_state_dict(model.state_dict())
    scheduler = DDPMScheduler(**SCHEDULE)
    alphas = scheduler.alphas_cumprod.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    images, labels = images.to(device), labels.to(device)
    budget, history, start, step = minutes * 60.0, [], time.perf_counter(), 0
    while step < max_steps:
        # warm-up, then cosine over the wall-clock budget: the run ends on time however busy the machine is
        progress = (time.perf_counter() - start) / budget
        if progress >= 1.0:
            break
        lr = config["lr"] * min(1.0, (step + 1) / config["warmup_steps"]) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(0, len(images), (config["batch"],), device=device, generator=generator)
        x0 = to_latent(images[index])
        flip = torch.rand(len(index), device=device, generator=generator) < 0.5
        x0 = torch.where(flip[:, None, None, None], F.pixel_unshuffle(F.pixel_shuffle(x0, 2).flip(-1), 2), x0)
        cls = torch.where(
            torch.rand(len(index), device=device, generator=generator) < config["p_uncond"], NULL_CLASS, labels[index]
        )
        t = torch.randint(0, SCHEDULE["num_train_timesteps"], (len(index),), device=device, generator=generator)
        noise = torch.randn(x0.shape, device=device, generator=generator)
        a = alphas[t].sqrt()[:, None, None, None]
        s = (1 - alphas[t]).sqrt()[:, None, None, None]
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            pred = model(a * x0 + s * noise, t, cls)
        loss = F.mse_loss(pred.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        decay = min(config["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        step += 1
        if step % 100 == 0:
            history.append({"step": step, "loss": loss.item(), "seconds": time.perf_counter() - start})
            print(f"step {step}: loss {loss.item():.4f} ({history[-1]['seconds']:.0f} s)", file=sys.stderr, flush=True)
    record = {**config, "steps": step, "train_seconds": time.perf_counter() - start, "history": history}
    return ema.cpu(), record


@torch.no_grad()
def sample(
    model: Generator, labels: torch.Tensor, noise: torch.Tensor, steps: int = 25, guidance: float = 2.0
) -> torch.Tensor:
    """DDIM (eta 0) with classifier-free guidance; cond and uncond run as one batch, as SD pipelines do.

    Shapes:
        labels: [B]
        noise: [B, 4, 16, 16]
        returns: [B, 32, 32] in [0, 1]
    """
    scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False)
    scheduler.set_timesteps(steps)
    context = torch.cat([model.context(torch.full_like(labels, NULL_CLASS)), model.context(labels)])
    x = noise
    for t in scheduler.timesteps:
        uncond, cond = model.unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample.chunk(2)
        x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    return from_latent(x)

"""Training the learned renderer (CycleGAN) on unpaired image sets.

Domain A is the synthesized scenes, domain B the unlabelled real checkout images; the renderer
is the generator A -> B. Losses (the paper's): least-squares adversarial, cycle consistency
(L1, weight ``LAMBDA_CYCLE``) and identity (L1, weight ``LAMBDA_IDENTITY * LAMBDA_CYCLE``), with
a history pool of generated images for the discriminators and a learning rate constant until
``DECAY_START`` and linear to 0 at ``MAX_ITER``.

Iteration ``i`` draws its crops from ``(SEED, i)`` and every other random choice is seeded, so
training killed and resumed from ``last_checkpoint.pth`` continues exactly where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from dpsnet.synthesis.render.cyclegan import PatchDiscriminator, ResnetGenerator, init_weights
from dpsnet.synthesis.render.cyclegan_renderer import (
    FINAL_MODEL,
    LAST_CHECKPOINT,
    resize_longer,
    resolve_device,
    to_tensor,
)
from dpsnet.utils.io import BadInputError, atomic_path, atomic_write_json, read_image
from dpsnet.utils.weights import load_weights_file

logger = logging.getLogger(__name__)


class UnpairedCrops(IterableDataset):
    """Yields ``(iteration, A batch, B batch)`` for iterations ``start..stop-1``.

    Each image is resized so its longer side is ``load_size``, then a ``crop_size`` square is
    cut at a random place and flipped at random; all choices come from ``(seed, iteration)``.
    Workers take interleaved iterations, and DataLoader returns them in order.
    """

    def __init__(self, files_a, files_b, *, load_size, crop_size, batch_size, seed, start, stop):
        if not files_a or not files_b:
            raise ValueError("CycleGAN needs at least one image in each domain")
        self.files = (list(files_a), list(files_b))
        self.load_size, self.crop_size, self.batch_size = load_size, crop_size, batch_size
        self.seed, self.start, self.stop = seed, start, stop

    def _load(self, domain: int, index: int) -> np.ndarray:
        files = self.files[domain]
        for k in range(len(files)):
            path = files[(index + k) % len(files)]
            try:
                return resize_longer(read_image(path), self.load_size)
            except BadInputError as e:
                logger.warning("CycleGAN data: skipped %s", e)
        raise BadInputError(f"no readable image among {len(files)} files of domain {'AB'[domain]}")

    def _crop(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        c = self.crop_size
        h, w = image.shape[:2]
        if h < c or w < c:
            image = cv2.copyMakeBorder(
                image, 0, max(0, c - h), 0, max(0, c - w), cv2.BORDER_REFLECT_101
            )
            h, w = image.shape[:2]
        y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        crop = image[y : y + c, x : x + c]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        return to_tensor(crop)

    def batch(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, it, 1])
        out = []
        for domain in (0, 1):
            crops = []
            for _ in range(self.batch_size):
                idx = int(rng.integers(len(self.files[domain])))
                crops.append(self._crop(self._load(domain, idx), rng))
            out.append(torch.stack(crops))
        return out[0], out[1]

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for it in range(self.start + wid, self.stop, nw):
            yield (it, *self.batch(it))


class ImagePool:
    """History of generated images shown to a discriminator (the paper keeps 50).

    Half of the time a query returns an older image and stores the new one in its place, which
    keeps the discriminator from chasing only the generator's latest output.
    """

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.size <= 0:
            return batch
        out = []
        for img in batch.detach():
            if len(self.images) < self.size:
                self.images.append(img.cpu())
                out.append(img)
            elif rng.random() < 0.5:
                k = int(rng.integers(self.size))
                old = self.images[k]
                self.images[k] = img.cpu()
                out.append(old.to(img.device))
            else:
                out.append(img)
        return torch.stack(out)


def _lsgan(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(logits, torch.full_like(logits, 1.0 if real else 0.0))


class CycleGANTrainer:
    """Builds the four networks, trains them, checkpoints and resumes.

    Args:
        cfg: a config with ``RENDER.CYCLEGAN`` (see ``dpsnet.config``).
        files_a: synthesized (source-domain) image paths.
        files_b: real (target-domain) image paths.
        output_dir: checkpoints, ``model_final.pth`` and ``metrics.json``; defaults to
            ``cfg.RENDER.CYCLEGAN.OUTPUT_DIR``.
    """

    def __init__(self, cfg, files_a, files_b, output_dir: str | None = None):
        c = cfg.RENDER.CYCLEGAN
        self.c = c
        self.seed = cfg.RENDER.SEED
        self.output_dir = Path(output_dir or c.OUTPUT_DIR)
        self.device = resolve_device(c.DEVICE)
        self.files_a, self.files_b = list(files_a), list(files_b)
        torch.manual_seed(self.seed)
        self.g_ab = ResnetGenerator(cfg).to(self.device)
        self.g_ba = ResnetGenerator(cfg).to(self.device)
        self.d_a = PatchDiscriminator(cfg).to(self.device)
        self.d_b = PatchDiscriminator(cfg).to(self.device)
        for net in (self.g_ab, self.g_ba, self.d_a, self.d_b):
            init_weights(net)
        betas = (c.BETA1, 0.999)
        self.opt_g = torch.optim.Adam(
            [*self.g_ab.parameters(), *self.g_ba.parameters()], lr=c.LR, betas=betas
        )
        self.opt_d = torch.optim.Adam(
            [*self.d_a.parameters(), *self.d_b.parameters()], lr=c.LR, betas=betas
        )
        span = max(1, c.MAX_ITER - c.DECAY_START)

        def lr_factor(it: int) -> float:
            return 1.0 if it < c.DECAY_START else max(0.0, (c.MAX_ITER - it) / span)

        self.lr_factor = lr_factor
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, lr_factor)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, lr_factor)
        self.pool_a, self.pool_b = ImagePool(c.POOL_SIZE), ImagePool(c.POOL_SIZE)
        self.iteration = 0
        self.history: list[dict] = []

    # ---- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "g_ab": self.g_ab.state_dict(),
            "g_ba": self.g_ba.state_dict(),
            "d_a": self.d_a.state_dict(),
            "d_b": self.d_b.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "pool_a": self.pool_a.images,
            "pool_b": self.pool_b.images,
            "history": self.history,
            "generator": self._generator_meta(),
        }

    def _generator_meta(self) -> dict:
        return {"ngf": self.c.NGF, "n_blocks": self.c.N_BLOCKS, "norm": self.c.NORM}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        for name in ("g_ab", "g_ba", "d_a", "d_b", "opt_g", "opt_d", "sched_g", "sched_d"):
            getattr(self, name).load_state_dict(state[name])
        # The schedule follows this config's MAX_ITER/DECAY_START, so a run can be extended.
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * self.lr_factor(self.iteration)
        self.pool_a.images = list(state["pool_a"])
        self.pool_b.images = list(state["pool_b"])
        self.history = list(state["history"])

    def save(self) -> None:
        """Write ``last_checkpoint.pth`` (everything) and ``metrics.json`` atomically."""
        with atomic_path(self.output_dir / LAST_CHECKPOINT) as tmp:
            torch.save(self.state_dict(), tmp)
        atomic_write_json(self.output_dir / "metrics.json", self.history)

    def save_final(self) -> Path:
        """Write ``model_final.pth``: the A -> B generator and its architecture only."""
        path = self.output_dir / FINAL_MODEL
        with atomic_path(path) as tmp:
            torch.save(
                {
                    "g_ab": self.g_ab.state_dict(),
                    "generator": self._generator_meta(),
                    "iteration": self.iteration,
                },
                tmp,
            )
        return path

    def resume(self) -> bool:
        """Load ``last_checkpoint.pth`` when there is one; True if it did."""
        path = self.output_dir / LAST_CHECKPOINT
        if not path.is_file():
            return False
        state = load_weights_file(path, map_location=self.device)  # tensors and plain data only
        try:
            self.load_state_dict(state)
        except (RuntimeError, KeyError, EOFError, OSError, TypeError) as e:
            raise BadInputError(f"{path}: unreadable CycleGAN checkpoint ({e})") from None
        logger.info("CycleGAN: resumed from %s at iteration %d", path, self.iteration)
        return True

    # ---- training ----------------------------------------------------------------------------
    def step(self, real_a: torch.Tensor, real_b: torch.Tensor, rng: np.random.Generator) -> dict:
        """One generator and one discriminator update on (N, 3, S, S) batches in [-1, 1]."""
        c = self.c
        real_a, real_b = real_a.to(self.device), real_b.to(self.device)
        for d in (self.d_a, self.d_b):
            d.requires_grad_(False)
        fake_b = self.g_ab(real_a)
        fake_a = self.g_ba(real_b)
        rec_a = self.g_ba(fake_b)
        rec_b = self.g_ab(fake_a)
        loss_gan = _lsgan(self.d_b(fake_b), True) + _lsgan(self.d_a(fake_a), True)
        loss_cycle = c.LAMBDA_CYCLE * (F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b))
        loss_idt = torch.zeros((), device=self.device)
        if c.LAMBDA_IDENTITY > 0:
            loss_idt = (
                c.LAMBDA_IDENTITY
                * c.LAMBDA_CYCLE
                * (F.l1_loss(self.g_ab(real_b), real_b) + F.l1_loss(self.g_ba(real_a), real_a))
            )
        loss_g = loss_gan + loss_cycle + loss_idt
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()

        for d in (self.d_a, self.d_b):
            d.requires_grad_(True)
        old_b = self.pool_b.query(fake_b, rng)
        old_a = self.pool_a.query(fake_a, rng)
        loss_d = 0.5 * (
            _lsgan(self.d_b(real_b), True)
            + _lsgan(self.d_b(old_b.detach()), False)
            + _lsgan(self.d_a(real_a), True)
            + _lsgan(self.d_a(old_a.detach()), False)
        )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        self.sched_g.step()
        self.sched_d.step()
        losses = {"gan": loss_gan, "cycle": loss_cycle, "identity": loss_idt, "d": loss_d}
        return {k: float(v.detach()) for k, v in losses.items()}

    def train(self, resume: bool = True) -> Path:
        """Train until ``MAX_ITER`` (continuing a checkpoint when ``resume``); returns the path
        of ``model_final.pth``."""
        c = self.c
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        if self.iteration < c.MAX_ITER:
            data = UnpairedCrops(
                self.files_a,
                self.files_b,
                load_size=c.LOAD_SIZE,
                crop_size=c.CROP_SIZE,
                batch_size=c.BATCH_SIZE,
                seed=self.seed,
                start=self.iteration,
                stop=c.MAX_ITER,
            )
            loader = DataLoader(
                data,
                batch_size=None,
                num_workers=c.NUM_WORKERS,
                pin_memory=self.device.type == "cuda",
                persistent_workers=False,
            )
            for m in (self.g_ab, self.g_ba, self.d_a, self.d_b):
                m.train()
            bar = tqdm(total=c.MAX_ITER, initial=self.iteration, desc="CycleGAN")
            running: dict[str, float] = {}
            for it, real_a, real_b in loader:
                assert it == self.iteration, (it, self.iteration)
                losses = self.step(real_a, real_b, np.random.default_rng([self.seed, it, 2]))
                for k, v in losses.items():
                    running[k] = running.get(k, 0.0) + v
                self.iteration += 1
                bar.update(1)
                if self.iteration % c.LOG_PERIOD == 0 or self.iteration == c.MAX_ITER:
                    n = (self.iteration - 1) % c.LOG_PERIOD + 1
                    record = {"iteration": self.iteration, **{k: v / n for k, v in running.items()}}
                    self.history.append(record)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "iteration"})
                    running = {}
                if self.iteration % c.CHECKPOINT_PERIOD == 0 or self.iteration == c.MAX_ITER:
                    self.save()
            bar.close()
        return self.save_final()

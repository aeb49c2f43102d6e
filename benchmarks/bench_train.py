"""Epoch time of varloss's trainer against pythae's BaseTrainer, same model, same data.

Both train F. Chollet's dense VAE (784 -> 256 ReLU -> 2 (mu, logvar) -> 256 ReLU -> 784 sigmoid,
binary cross-entropy summed over pixels + KL, Adam lr 1e-3, batch 100) on the same MNIST images,
in the same process, on the same device and thread count, without progress bars. The epochs
alternate (varloss epoch k, pythae epoch k, ...) so that load from other processes hits both
alike; varloss resumes its run from the checkpoint for each next epoch. Timed: the training loop
of each epoch only (varloss's per-epoch `seconds` in its history, which excludes checkpointing and
evaluation; pythae's `train_step`). Prints the best epoch of each, images per second and the ratio,
by wall clock and, on CPU, by this process's CPU time (steadier when other jobs share the cores).

On a shared CPU use one thread (the default): two threads contending with other jobs run this
small network up to ten times slower and the timings become noise.

pythae is installed only for this benchmark (`make bench` does it; pythae needs no torchvision):

    pip install pythae
    python benchmarks/bench_train.py [--dataset mnist] [--limit N] [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

from varloss.data import load
from varloss.pipelines.runtime import pick_device
from varloss.pipelines.train import TrainConfig, train


def pythae_trainer(images: torch.Tensor, epochs: int, device: str, seed: int, folder: str):
    """pythae's BaseTrainer over its VAE with Chollet's encoder/decoder, progress bar removed."""
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import ProgressBarCallback

    pixels = images[0].numel()

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 256), nn.ReLU())
            self.mu, self.logvar = nn.Linear(256, 2), nn.Linear(256, 2)

        def forward(self, x: torch.Tensor) -> ModelOutput:
            h = self.body(x)
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(2, 256), nn.ReLU(), nn.Linear(256, pixels), nn.Sigmoid()
            )

        def forward(self, z: torch.Tensor) -> ModelOutput:
            return ModelOutput(reconstruction=self.body(z).reshape(-1, *images.shape[1:]))

    torch.manual_seed(seed)
    config = VAEConfig(input_dim=tuple(images.shape[1:]), latent_dim=2, reconstruction_loss="bce")
    model = VAE(config, encoder=Encoder(), decoder=Decoder())
    training = BaseTrainerConfig(
        output_dir=folder,
        num_epochs=epochs,
        learning_rate=1e-3,
        per_device_train_batch_size=100,
        no_cuda=device == "cpu",
        seed=seed,
    )
    trainer = BaseTrainer(
        model, BaseDataset(images, torch.zeros(len(images))), training_config=training
    )
    trainer.prepare_training()  # seed, optimizer, scheduler, output folder, callbacks
    handler = trainer.callback_handler
    handler.callbacks = [c for c in handler.callbacks if not isinstance(c, ProgressBarCallback)]
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--limit", type=int, default=None, help="training images (default: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        import pythae  # noqa: F401
    except ImportError:
        raise SystemExit("pythae is not installed: `pip install pythae` (benchmark only)") from None
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = str(pick_device(args.device))
    images = load(args.dataset, "train", limit=args.limit).images
    print(
        f"{args.dataset}: {len(images)} images, batch 100, Chollet dense VAE, device {device}, "
        f"torch threads {torch.get_num_threads()}, {args.epochs} alternating epochs each"
    )
    ours: list[float] = []
    theirs: list[float] = []
    ours_cpu: list[float] = []
    theirs_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as run, tempfile.TemporaryDirectory() as their_folder:
        trainer = pythae_trainer(images, args.epochs, device, args.seed, their_folder)
        for epoch in range(1, args.epochs + 1):
            config = TrainConfig(
                family="dense",
                dataset=args.dataset,
                epochs=epoch,
                latent=2,
                seed=args.seed,
                out=run,
                limit=args.limit,
                eval_limit=100,
                fid="off",  # evaluation is not timed; skip FID and its small-sample warning
                batch_size=100,
                device=args.device,
            )
            report = train(config, resume=epoch > 1, progress=False)
            row = report["history"][-1]
            ours.append(row["seconds"])
            ours_cpu.append(row["cpu_seconds"])
            start, cpu_start = time.perf_counter(), time.process_time()
            trainer.train_step(epoch)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            theirs.append(time.perf_counter() - start)
            theirs_cpu.append(time.process_time() - cpu_start)
            print(
                f"epoch {epoch}: varloss {ours[-1]:.2f} s ({ours_cpu[-1]:.2f} s CPU), "
                f"pythae {theirs[-1]:.2f} s ({theirs_cpu[-1]:.2f} s CPU)"
            )
    for name, wall, cpu in (("varloss", ours, ours_cpu), ("pythae", theirs, theirs_cpu)):
        print(
            f"{name:8s} {min(wall):7.2f} s/epoch  {len(images) / min(wall):9.0f} images/s  "
            f"(best epoch; {min(cpu):.2f} CPU s/epoch)"
        )
    print(f"throughput ratio varloss / pythae (wall clock): {min(theirs) / min(ours):.2f}x")
    if device == "cpu":
        ratio = min(theirs_cpu) / min(ours_cpu)
        print(f"throughput ratio varloss / pythae (CPU time):   {ratio:.2f}x")


if __name__ == "__main__":
    main()

"""RGB torchvision weights as the start of a grey run: the input convolution adapted (models/adapt.py).

    python benchmarks/rgb_to_grey.py --out runs/rgb-to-grey --pretrain-limit 12000 --pretrain-epochs 3

No ImageNet weights can be downloaded here, so the RGB weights are made the way ImageNet's are, on a
smaller task, and are labelled for what they are:

1. A plain PyTorch loop (no bagoftricks) trains ``torchvision.models.resnet18()`` — 3-channel stem,
   1,000-class head, exactly the shapes of torchvision's ImageNet file — on Fashion-MNIST's first five
   classes (T-shirt/top, Trouser, Pullover, Dress, Coat; those among the first ``--pretrain-limit``
   training images) rendered as coloured RGB images: each garment in a random colour on a random
   dark background, padded to 32 px, normalised with ImageNet's statistics. Its state dict is saved
   as OUT/rgb_resnet18.pth; its top-1 is measured on the five classes' test images, coloured alike.
2. bagoftricks fine-tunes our ResNet-18-B on the *grey* images of the other five classes (Sandal,
   Shirt, Sneaker, Bag, Ankle boot; ``data.class_subset``) from the first ``--limit`` training
   images, at 32 px, starting from that file (``model.pretrained``: the stem's conv summed over RGB,
   the 1,000-class head re-initialised, both named in the run log), and the same run from scratch
   (``model.pretrained`` empty), for each seed; and from scratch with the head's lr not multiplied
   (``optim.head_lr_mult=1``: the fine-tuning recipe's 10x head lr is meant for a trained backbone, so
   scratch is also given its plain lr). Test top-1 is on the 5,000 test images of those classes.

Writes OUT/results.json and prints the table of benchmarks/README.md ("RGB weights, grey run"). The
weights file and the runs already in OUT/results.json are reused, so an interrupted or extended
command (another seed) trains only what is missing.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

import bagoftricks
from bagoftricks.data import load_split

PRETRAIN_CLASSES = [0, 1, 2, 3, 4]
FINETUNE_CLASSES = [5, 6, 7, 8, 9]
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def coloured(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Grey uint8 [N, 1, 28, 28] -> float RGB [N, 3, 32, 32] in 0..1: the garment in a random colour
    (each channel in [0.25, 1]) on a random dark background (each channel in [0, 0.3]), padded by 2."""
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    fg = 0.25 + 0.75 * torch.rand(n, 3, 1, 1, generator=g)
    bg = 0.3 * torch.rand(n, 3, 1, 1, generator=g)
    x = F.pad(images.float() / 255.0, (2, 2, 2, 2))
    return x * fg + (1 - x) * bg


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random crop of the 4-px zero-padded image."""
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    padded = F.pad(x, (4, 4, 4, 4))
    i, j = torch.randint(0, 9, (2,), generator=g).tolist()
    return padded[:, :, i:i + 32, j:j + 32]


def pretrain(out: Path, epochs: int, seed: int, limit: int = 0) -> dict:
    """Step 1: torchvision's resnet18 (1,000 classes) on coloured RGB images of the first five classes."""
    train, test = load_split("fashion_mnist", "", "train"), load_split("fashion_mnist", "", "test")
    keep = torch.isin(train.labels, torch.tensor(PRETRAIN_CLASSES))
    if limit:
        keep &= torch.arange(len(keep)) < limit
    x, y = (coloured(train.images[keep], seed) - IMAGENET_MEAN) / IMAGENET_STD, train.labels[keep]
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()  # 1,000 outputs, as torchvision's ImageNet file
    batch, steps = 128, epochs * math.ceil(len(x) / 128)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps, pct_start=0.15)
    g, start = torch.Generator().manual_seed(seed), time.perf_counter()
    model.train()
    for epoch in range(epochs):
        print(f"pre-training epoch {epoch + 1}/{epochs} ({len(x)} images), {time.perf_counter() - start:.0f} s",
              flush=True)
        order = torch.randperm(len(x), generator=g)
        for k in range(0, len(x), batch):
            idx = order[k:k + batch]
            loss = F.cross_entropy(model(_augment(x[idx], g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    keep_t = torch.isin(test.labels, torch.tensor(PRETRAIN_CLASSES))
    xt, yt = (coloured(test.images[keep_t], seed + 1) - IMAGENET_MEAN) / IMAGENET_STD, test.labels[keep_t]
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xt[k:k + 500]).argmax(1) for k in range(0, len(xt), 500)])
    torch.save(model.state_dict(), out / "rgb_resnet18.pth")
    return {"images": len(x), "epochs": epochs, "seconds": round(seconds, 1),
            "rgb_test_top1": round(100.0 * (pred == yt).float().mean().item(), 2), "test_images": len(xt)}


VARIANTS = {"rgb-weights": ("rgb_resnet18.pth", 10), "scratch": ("", 10), "scratch, head lr x1": ("", 1)}


def finetune(out: Path, name: str, seed: int, limit: int, epochs: int) -> dict:
    """Step 2: our ResNet-18-B on grey images of the other five classes, as VARIANTS[name] says (weights file,
    optim.head_lr_mult)."""
    file, head_mult = VARIANTS[name]
    weights = str(out / file) if file else ""
    recipe = bagoftricks.load_recipe(None, [
        "model.arch=resnet18", "model.variant=B", f"model.pretrained={weights}",
        "data.name=fashion_mnist", "data.image_size=32", "data.augment=small", "data.pad=4",
        f"data.class_subset=[{','.join(map(str, FINETUNE_CLASSES))}]", f"data.train_limit={limit}",
        "optim.lr=0.1", "optim.weight_decay=0.0005", f"optim.head_lr_mult={head_mult}", "schedule.kind=cosine",
        "tricks.linear_scaling=true", "tricks.warmup_epochs=0.2", "tricks.no_bias_decay=true",
        "tricks.label_smoothing=0.1", f"train.epochs={epochs}", "train.batch_size=128", f"train.seed={seed}",
        "train.device=cpu", "train.precision=fp32"])
    start = time.perf_counter()
    run = bagoftricks.train(recipe, out / f"{name.replace(', ', '-').replace(' ', '')}-seed{seed}", progress=False)
    log = (run.folder / "run.log").read_text()
    note = next((line for line in log.splitlines() if "pretrained weights from" in line), "")
    return {"run": name, "seed": seed, "top1": run.top1, "seconds": round(time.perf_counter() - start, 1),
            "log": note.strip()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/rgb-to-grey")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--pretrain-limit", type=int, default=0, help="pre-train on the first N training images (0: all)")
    p.add_argument("--limit", type=int, default=2000, help="data.train_limit of the fine-tuning runs")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the fine-tuning runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu_start = time.process_time()
    done = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    if (out / "rgb_resnet18.pth").exists() and "pretrain" in done:
        res = {"pretrain": done["pretrain"], "runs": list(done.get("runs", []))}
    else:
        res = {"pretrain": pretrain(out, a.pretrain_epochs, 0, a.pretrain_limit), "runs": []}
    print(json.dumps(res["pretrain"]), flush=True)
    for seed in a.seeds:
        for name in VARIANTS:
            if any(r["run"] == name and r["seed"] == seed for r in res["runs"]):
                continue
            res["runs"].append(finetune(out, name, seed, a.limit, a.epochs))
            print(json.dumps(res["runs"][-1]), flush=True)
    res["cpu_seconds"] = round(done.get("cpu_seconds", 0) + time.process_time() - cpu_start, 1)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    for name in VARIANTS:
        tops = [r["top1"] for r in res["runs"] if r["run"] == name and r["seed"] in a.seeds]
        mean = sum(tops) / len(tops)
        std = (sum((t - mean) ** 2 for t in tops) / max(1, len(tops) - 1)) ** 0.5
        print(f"| {name} | {mean:.2f} ± {std:.2f} % | {', '.join(f'{t:.2f}' for t in tops)} |")


if __name__ == "__main__":
    main()

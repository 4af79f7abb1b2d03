"""Draws docs/datasets/fmnist-scenes.png: test scenes 0-7 with their boxes (top) and label maps (bottom).

    PYTHONPATH=src python docs/datasets/fmnist_scenes_figure.py
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bagoftricks.data.catalog import DEFAULT_ROOTS  # noqa: E402
from bagoftricks.transfer.draw import draw  # noqa: E402
from bagoftricks.transfer.scenes import load_scenes  # noqa: E402

N = 8
scenes = load_scenes(DEFAULT_ROOTS["fashion_mnist"], "test", N, 96)
fig, axes = plt.subplots(2, N, figsize=(2 * N, 4.3))
for i in range(N):
    t = scenes.targets[i]
    boxed = draw(scenes.images[i], boxes=t["boxes"], labels=t["labels"], classes=scenes.classes)
    masked = draw(scenes.images[i] // 3, mask=t["mask"], alpha=0.8)
    for row, pic in enumerate((boxed, masked)):
        axes[row, i].imshow(pic.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes[row, i].set_axis_off()
    axes[0, i].set_title(f"test scene {i}", fontsize=9)
fig.suptitle("Fashion-MNIST scenes, 96x96: boxes of the visible pixels (top), label maps (bottom)", fontsize=11)
fig.tight_layout()
fig.savefig(Path(__file__).with_name("fmnist-scenes.png"), dpi=80)

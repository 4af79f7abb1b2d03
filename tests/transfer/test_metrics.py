"""mAP, mIoU and pixel accuracy against values computed by hand on tiny cases."""
import pytest
import torch

from bagoftricks.transfer.metrics import DetectionScore, SegmentationScore
from bagoftricks.transfer.targets import IGNORE


def test_map_by_hand():
    """Two objects; ranked detections: exact hit (0.9), a miss (0.8), a box of IoU 0.72 with the second (0.7).

    IoU thresholds 0.5-0.7: TP, FP, TP -> precision 1 up to recall 0.5, 2/3 up to 1; COCO's 101 recall
    points give (51 x 1 + 50 x 2/3) / 101. Thresholds 0.75-0.95: TP, FP, FP -> 51 / 101.
    """
    target = {"boxes": torch.tensor([[20.0, 20, 40, 40], [0, 0, 10, 10]]), "labels": torch.tensor([1, 1])}
    pred = {"boxes": torch.tensor([[20.0, 20, 40, 40], [60, 60, 70, 70], [0, 0, 10, 7.2]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}
    s = DetectionScore()
    s.update([pred], [target])
    res = s.compute()
    high = (51 + 50 * 2 / 3) / 101
    low = 51 / 101
    assert res["map_50"] == pytest.approx(100 * high, abs=1e-3)
    assert res["map"] == pytest.approx(100 * (5 * high + 5 * low) / 10, abs=1e-3)


def test_map_perfect_and_wrong_class():
    target = {"boxes": torch.tensor([[5.0, 5, 25, 25]]), "labels": torch.tensor([3])}
    right = {"boxes": torch.tensor([[5.0, 5, 25, 25]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([3])}
    wrong = dict(right, labels=torch.tensor([4]))
    for pred, want in ((right, 100.0), (wrong, 0.0)):
        s = DetectionScore()
        s.update([pred], [target])
        assert s.compute()["map_50"] == pytest.approx(want)


def test_miou_and_pixel_accuracy_by_hand():
    """Class 0: 1 of 3 pixels in the union; class 1: 2 of 3; class 2: 2 of 3; class 3 absent (not averaged);
    the IGNORE pixel is not scored: mIoU = (1/3 + 2/3 + 2/3) / 3, pixel accuracy = 5 of 7."""
    pred = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 3]]])
    target = torch.tensor([[[0, 1, 1, 1], [2, 2, 0, IGNORE]]])
    s = SegmentationScore(4)
    s.update(pred, target)
    res = s.compute()
    assert res["miou"] == pytest.approx(100 * 5 / 9, abs=1e-4)
    assert res["pixel_acc"] == pytest.approx(100 * 5 / 7, abs=1e-4)

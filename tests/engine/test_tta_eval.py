"""`bagoftricks eval --tta`: the plain numbers and the TTA numbers side by side, from one pass."""
import json

import pytest
import torch

from bagoftricks import tricks
from bagoftricks.cli import main
from bagoftricks.engine import evaluate_checkpoint, load_model
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.engine.setup import build_data
from tests.deploy.conftest import run_of


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    return run_of(tmp_path_factory.mktemp("tta") / "run")


def test_eval_reports_both(small_run, capsys):
    assert main(["eval", "--checkpoint", str(small_run), "--tta", "flip", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    plain = evaluate_checkpoint(small_run, device="cpu", tta="none")
    assert res["top1"] == plain["top1"] and res["tta"] == "flip" and "tta_top1" not in plain
    assert 0 <= res["tta_top1"] <= 100 and res["tta_loss"] != plain["loss"]


@pytest.mark.parametrize("mode", ["flip", "flip_shift"])
def test_tta_numbers_are_those_of_the_mean_logits(small_run, mode):
    """The reported TTA loss is the cross-entropy of the view-averaged logits of every test image, the shifts
    bringing in black at the edge, as the run's zero-padded crops did (data.pad_mode zeros)."""
    res = evaluate_checkpoint(small_run, device="cpu", tta=mode)
    lm = load_model(small_run)
    assert lm.recipe.data.pad_mode == "zeros" and lm.border == tuple(-m / s for m, s in zip(lm.transform.mean,
                                                                                              lm.transform.std))
    data = build_data(lm.recipe, torch.device("cpu"), DistInfo(), train=False)
    x = data.eval_transform(data.test.images)
    with torch.no_grad():
        logits = tricks.tta_logits(lm.model, x, mode, lm.border)
        if mode == "flip_shift":  # the border is the run's: the mean colour (0.0) gives other logits
            assert not torch.allclose(logits, tricks.tta_logits(lm.model, x, mode, 0.0))
    loss = torch.nn.functional.cross_entropy(logits, data.test.labels).item()
    assert abs(res["tta_loss"] - loss) < 1e-5
    top1 = 100 * (logits.argmax(1) == data.test.labels).float().mean().item()
    assert abs(res["tta_top1"] - top1) < 1e-4

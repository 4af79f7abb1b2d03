"""load_model: a checkpoint's model rebuilt in Python gives the logits `bagoftricks eval` computes."""
import torch

from bagoftricks.engine import build_data, evaluate_checkpoint, load_model, train
from bagoftricks.engine.distributed import DistInfo
from tests.engine.conftest import tiny


def test_load_model_gives_the_evaluated_logits(tmp_path):
    r = tiny("train.epochs=1", "tricks.ema_decay=0.9")
    train(r, tmp_path / "run", progress=False)
    m = load_model(tmp_path / "run")
    assert not m.model.training and m.recipe == r and m.checkpoint.name.startswith("step-")
    images = build_data(r, torch.device("cpu"), DistInfo(), train=False).test.images  # uint8 [N, 3, 16, 16]
    with torch.no_grad():
        logits = m.model(m.transform(images))
    ref = evaluate_checkpoint(tmp_path / "run", device="cpu", want_logits=True)
    assert logits.shape == ref["logits"].shape and len(m.classes) == logits.shape[1]
    torch.testing.assert_close(logits, ref["logits"], rtol=1e-5, atol=1e-5)
    assert m.transform(torch.full((2, 3, 40, 30), 255, dtype=torch.uint8)).shape == (2, 3, 16, 16)  # any size
    ema = load_model(tmp_path / "run", use_ema=True).model
    assert not torch.equal(ema(m.transform(images[:4])), m.model(m.transform(images[:4])))

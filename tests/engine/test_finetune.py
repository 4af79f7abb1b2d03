"""Fine-tuning (model.pretrained, model.freeze, optim.head_lr_mult): the run starts from the
pre-trained weights with a new head, says so in its log, and resumes bitwise like any other run."""
import shutil

import pytest
import torch

from bagoftricks.engine import setup, train
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.errors import RecipeError, TrainingInterrupted
from tests.engine.conftest import tiny
from tests.engine.test_resume import assert_bitwise_equal, final_state


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    run = tmp_path_factory.mktemp("pre") / "run"
    train(tiny("train.epochs=1", "model.variant=D"), run, progress=False)
    return run


def _finetune(backbone, *extra):
    return tiny("model.variant=D", "data.num_classes=5", f"model.pretrained={backbone}", "model.freeze=layer1",
                "optim.head_lr_mult=10", *extra)


def test_starts_from_the_backbone_with_a_new_head(backbone):
    t = setup.setup_training(_finetune(backbone), torch.device("cpu"), DistInfo())
    pre = final_state(backbone)["model"]
    own = t.model.state_dict()
    body = [k for k in own if not k.startswith("fc.")]
    assert all(torch.equal(own[k], pre[k]) for k in body)
    assert own["fc.weight"].shape == (5, 16) and pre["fc.weight"].shape == (4, 16)
    assert "classifier head fc re-initialised (4 classes in the file, 5 here)" in t.model.pretrained_note


def test_resume_is_bitwise_and_does_not_need_the_weights_file_again(backbone, tmp_path):
    copy = tmp_path / "backbone"
    shutil.copytree(backbone, copy)
    r = _finetune(copy, "train.epochs=2", "tricks.tta=flip")
    train(r, tmp_path / "full", progress=False)
    with pytest.raises(TrainingInterrupted):
        train(r, tmp_path / "part", progress=False, stop_after_steps=6)
    shutil.rmtree(copy)  # the checkpoint holds the weights now
    train(r, tmp_path / "part", resume=True, progress=False)
    assert_bitwise_equal(final_state(tmp_path / "full")["model"], final_state(tmp_path / "part")["model"])
    assert "pretrained weights from" in (tmp_path / "full" / "run.log").read_text()


def test_a_missing_or_unfitting_file_names_the_field(backbone, tmp_path):
    with pytest.raises(RecipeError, match="model.pretrained: .*nowhere.pt: not found"):
        setup.setup_training(_finetune(tmp_path / "nowhere.pt"), torch.device("cpu"), DistInfo())
    with pytest.raises(RecipeError, match=r"model.pretrained: .*conv1.0.weight has shape \[2, 3, 3, 3\] in the "
                                          r"file and \[8, 3, 3, 3\]"):
        setup.setup_training(_finetune(backbone, "model.width=16"), torch.device("cpu"), DistInfo())


def test_a_torchvision_resnet50_state_dict_fine_tunes(tmp_path):
    import torchvision
    torch.manual_seed(0)
    tv = torchvision.models.resnet50()  # 1000 classes, random weights: nothing is downloaded
    torch.save(tv.state_dict(), tmp_path / "resnet50.pth")
    r = tiny("model.arch=resnet50", "model.variant=B", "model.width=0", "data.image_size=32",
             "data.synthetic_samples=16", "train.epochs=1", "train.batch_size=8",
             f"model.pretrained={tmp_path / 'resnet50.pth'}", "optim.head_lr_mult=10")
    final = train(r, tmp_path / "run", progress=False)
    log = (tmp_path / "run" / "run.log").read_text()
    assert "torchvision resnet50 layout" in log and "(1000 classes in the file, 4 here)" in log
    trained = final_state(tmp_path / "run")["model"]
    assert not torch.equal(trained["layer4.2.conv3.weight"], tv.state_dict()["layer4.2.conv3.weight"])
    assert final["epoch"] == 1 and "val_top1" in final

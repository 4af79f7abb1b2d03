"""Drawing: boxes and masks land where they are and in their class's colour."""
import torch

from bagoftricks.transfer.draw import PALETTE, colour, draw, save_png


def _rgb(hexcode):
    return [int(hexcode[i:i + 2], 16) for i in (1, 3, 5)]


def test_box_outline_in_class_colour_and_inside_untouched():
    img = torch.zeros(1, 32, 32, dtype=torch.uint8)
    out = draw(img, boxes=torch.tensor([[4.0, 4, 20, 20]]), labels=torch.tensor([2]))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert out[:, 4, 12].tolist() == _rgb(colour(2))          # top edge
    assert out[:, 12, 12].tolist() == [0, 0, 0]               # inside
    assert out[:, 28, 28].tolist() == [0, 0, 0]               # outside


def test_mask_blends_only_labelled_pixels():
    img = torch.zeros(1, 8, 8, dtype=torch.uint8)
    mask = torch.zeros(8, 8, dtype=torch.uint8)
    mask[:4] = 1
    mask[7, 7] = 255  # IGNORE is not drawn
    out = draw(img, mask=mask, alpha=1.0)
    assert out[:, 0, 0].tolist() == _rgb(colour(1))
    assert out[:, 6, 0].tolist() == [0, 0, 0] and out[:, 7, 7].tolist() == [0, 0, 0]
    assert colour(1) != colour(2) and colour(0) == PALETTE[0]


def test_save_png_roundtrip(tmp_path):
    from PIL import Image
    pic = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path = save_png(tmp_path / "a" / "x.png", pic)
    back = torch.from_numpy(__import__("numpy").array(Image.open(path))).permute(2, 0, 1)
    assert torch.equal(back, pic)

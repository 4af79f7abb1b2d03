import pytest
import torch


from bagoftricks.tricks.randaugment import OPS, apply_op, randaugment_batch


def _img(c=1):
    return torch.tensor([[0, 100, 200], [255, 50, 128], [10, 20, 30]], dtype=torch.uint8).expand(c, 3, 3).clone()


def test_num_ops_zero_is_identity():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert randaugment_batch(x, 0, 9, torch.Generator().manual_seed(0)) is x


def test_ops_by_hand():
    img = _img()
    assert torch.equal(apply_op(img, "Identity", 30, False), img)
    # Solarize at m = 10: threshold 255·(1 - 10/30) = 170, pixels >= 170 are inverted (255 - v)
    assert apply_op(img, "Solarize", 10, False)[0].tolist() == [[0, 100, 55], [0, 50, 128], [10, 20, 30]]
    # Posterize at m = 30 keeps 4 bits: v & 0xF0
    assert apply_op(img, "Posterize", 30, False)[0].tolist() == [[0, 96, 192], [240, 48, 128], [0, 16, 16]]
    # Brightness at m = 30, positive: factor 1.9, saturating at 255, floor (128·1.9 = 243.2 -> 243)
    assert apply_op(img, "Brightness", 30, False)[0].tolist() == [[0, 190, 255], [255, 95, 243], [19, 38, 57]]
    # negative sign: factor 0.1; uint8 results are truncated (floor), as in the positive case
    assert apply_op(img, "Brightness", 30, True)[0].tolist() == [[0, 10, 20], [25, 5, 12], [1, 2, 3]]
    # TranslateX of a 3-wide image at m = 30: int(150/331·3) = 1 pixel right, filled with 0
    assert apply_op(img, "TranslateX", 30, False)[0].tolist() == [[0, 0, 100], [0, 255, 50], [0, 10, 20]]


@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_keeps_shape_and_dtype(channels):
    img = torch.randint(0, 256, (channels, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for op in OPS:
        for neg in (False, True):
            out = apply_op(img, op, 9, neg)
            assert out.shape == img.shape and out.dtype == torch.uint8, op


def test_batch_uses_generator_draws_per_sample():
    x = torch.randint(0, 256, (6, 3, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = randaugment_batch(x, 2, 12, torch.Generator().manual_seed(3))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, randaugment_batch(x, 2, 12, torch.Generator().manual_seed(3)))  # reproducible
    g = torch.Generator().manual_seed(3)
    ops = torch.randint(0, len(OPS), (6, 2), generator=g).tolist()
    neg = (torch.rand(6, 2, generator=g) < 0.5).tolist()
    for i in range(6):
        expected = apply_op(apply_op(x[i], OPS[ops[i][0]], 12, neg[i][0]), OPS[ops[i][1]], 12, neg[i][1])
        assert torch.equal(out[i], expected)
    assert len({tuple(o) for o in ops}) > 1  # different samples got different ops


def test_rejects_float_input_and_bad_magnitude():
    with pytest.raises(ValueError):
        randaugment_batch(torch.rand(1, 3, 4, 4), 1, 9, torch.Generator())
    with pytest.raises(ValueError):
        randaugment_batch(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 1, 31, torch.Generator())

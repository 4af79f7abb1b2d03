"""The transfer table's Δ intervals (paired by seed, against a hand-computed case) and its score figure."""
import json

import yaml

from bagoftricks.report import transfer
from bagoftricks.report.sweep import CellData, Row, Sweep


def _row(tmp_path, index, name, mious, backbone=None):
    cells = []
    for seed, miou in enumerate(mious):
        d = tmp_path / f"{index:02d}" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "final.json").write_text(json.dumps({"miou": miou, "pixel_acc": 90.0 + seed}))
        if backbone is not None:
            (d / "recipe.yaml").write_text(yaml.safe_dump({"model": {"pretrained": str(backbone[seed])}}))
        cells.append(CellData(key=f"{index:02d}/seed{seed}", step=name, index=index, seed=seed, run_dir=d, result=None))
    return Row(index=index, name=name, folder=f"{index:02d}", paper={}, note="", cells=cells)


def _sweep(tmp_path, rows):
    return Sweep(dir=tmp_path, name="t", description="", kind="ladder", plan={}, rows=rows, teacher=None)


def test_delta_intervals_are_paired_by_seed(tmp_path):
    rows = [_row(tmp_path, 0, "base", [10, 12, 14]), _row(tmp_path, 1, "a", [11, 14, 15]),
            _row(tmp_path, 2, "b", [13, 15, 17])]
    _, headers, table, _ = transfer.table_block(_sweep(tmp_path, rows))
    col_prev, col_base = headers.index("Δ prev [95 % CI]"), headers.index("Δ base [95 % CI]")
    assert table[0][col_base] == "(base)" and table[0][col_prev] == "—"
    # row a - base per seed: 1, 2, 1 -> mean 1.333, sd 0.5774, t(0.975, 2) = 4.3027: half width 1.434
    assert table[1][col_base] == "+1.33 [-0.10, +2.77]"
    # row b - row a: 2, 1, 2 -> [0.23, 3.10], excludes 0: bold; row b - base: 3, 3, 3 -> no spread, no interval
    assert table[2][col_prev] == "**+1.67** [+0.23, +3.10]"
    assert table[2][col_base] == "+3.00 [n/a: no spread over 3 seeds]"


def test_score_figure_plots_scores_against_backbone_top1(tmp_path):
    backbones = []
    for seed, top1 in enumerate([88.0, 89.0, 90.0]):
        b = tmp_path / "bb" / f"seed{seed}"
        b.mkdir(parents=True)
        (b / "final.json").write_text(json.dumps({"val_top1": top1}))
        backbones.append(b)
    rows = [_row(tmp_path / "a", 0, "base", [10, 12, 14], backbones),
            _row(tmp_path / "a", 1, "a", [11, 14, 15], backbones), _row(tmp_path / "a", 2, "scratch", [9, 9, 10])]
    sweep = _sweep(tmp_path, rows)
    _, headers, table, _ = transfer.table_block(sweep)
    assert table[0][headers.index("backbone top-1 (%)")] == "89.00 ± 1.00"
    assert table[2][headers.index("backbone top-1 (%)")] == "—"               # from scratch: a dashed level
    png = transfer.figure(sweep, tmp_path / "fig" / "scores.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = _sweep(tmp_path, [_row(tmp_path / "b", 0, "base", [10, 12])])
    assert transfer.figure(bare, tmp_path / "fig" / "none.png") is None        # no backbone top-1: no figure


def test_delta_of_a_row_with_fewer_seeds_is_the_paired_one(tmp_path):
    """While a row has finished seeds 0-1 only, its Δ is over those seeds, inside its own interval."""
    rows = [_row(tmp_path, 0, "base", [60, 58, 38]), _row(tmp_path, 1, "a", [56, 55])]
    _, headers, table, _ = transfer.table_block(_sweep(tmp_path, rows))
    # per-seed differences -4, -3: mean -3.5, sd 0.7071, t(0.975, 1) = 12.706: half width 6.353
    assert table[1][headers.index("Δ base [95 % CI]")] == "-3.50 [-9.85, +2.85]"

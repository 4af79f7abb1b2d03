"""Transfer cells in an ablation: `ablate` trains them with `bagoftricks transfer`, a backbone per seed
through the {seed} token, and `report` renders their scores next to the backbones' top-1."""
import json

import yaml

from bagoftricks.cli import main as cli_main
from bagoftricks.report import make_report
from tests.transfer.conftest import TINY


def test_ablate_and_report_transfer_cells(tmp_path, backbone_run):
    (tmp_path / "bb").mkdir()
    (tmp_path / "bb" / "seed0").symlink_to(backbone_run)
    base = json.loads(json.dumps(TINY))
    base["transfer"]["task"] = "segment"
    base["train"]["epochs"] = 1
    trained = {"model.pretrained": str(tmp_path / "bb" / "seed{seed}")}
    spec = {"name": "transfer-mini", "base": base, "seeds": [0],
            "ladder": [{"name": "scratch"}, {"name": "+ trained backbone", "set": trained}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "sweep"
    assert cli_main(["ablate", str(path), "--out", str(out), "--jobs", "2"]) == 0
    plan = json.loads((out / "cells.json").read_text())
    assert all(c["command"].startswith("bagoftricks transfer --task segment") for c in plan["cells"])
    assert f"model.pretrained={tmp_path / 'bb' / 'seed0'}" in plan["cells"][1]["overrides"]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["ok", "ok"] and all("miou" in r and "pixel_acc" in r for r in results)
    page = open(make_report([out], html=False, echo=lambda s: None)["markdown"]).read()
    assert "mIoU (%)" in page and "pixel acc. (%)" in page and "backbone top-1 (%)" in page
    # seed k's backbone is what the spec asks for ("{seed}"), not a setting that differs from it
    assert "**Note:**" not in page and f"model.pretrained={tmp_path / 'bb' / 'seed{seed}'}" in page
    top1 = json.loads((backbone_run / "final.json").read_text())["val_top1"]
    row = next(line for line in page.splitlines() if "+ trained backbone" in line and line.startswith("|"))
    assert f"{top1:.2f}" in row
    cells = [c.strip() for c in row.strip("|").split("|")]
    first = [c.strip() for c in next(line for line in page.splitlines() if "| scratch" in line).strip("|").split("|")]
    assert first[-2] == "(base)" and first[-3] == "—"                    # Δ base, Δ prev of the first row
    d = float(cells[3]) - float(first[3])                                  # the mIoU column (rounded means)
    assert cells[-2] == cells[-3] and cells[-2].endswith(" [n/a: 1 seed]")  # one seed: no interval
    assert abs(float(cells[-2].split()[0]) - d) <= 0.011


def test_shipped_transfer_spec_points_at_the_table6_backbones(tmp_path):
    from pathlib import Path

    from bagoftricks.ablate.spec import cell_recipe, cell_task, expand, load_spec
    repo = Path(__file__).resolve().parents[2] / "recipes" / "ablations"
    spec = load_spec(repo / "fmnist-transfer.yaml")
    cells = expand(spec, tmp_path / "t")
    assert len(cells) == 36 and sorted(cell_task(spec, c) for c in cells) == ["detect"] * 18 + ["segment"] * 18
    t6 = {c.rel_dir for c in expand(load_spec(repo / "fmnist-table6.yaml"), tmp_path / "t6") if not c.is_teacher}
    scratch = [c for c in cells if "from scratch" in c.step.name]
    assert len(scratch) == 6 and all(cell_recipe(spec, c).model.pretrained == "" for c in scratch)
    for c in cells:
        if c in scratch:
            continue
        backbone = cell_recipe(spec, c).model.pretrained
        prefix = "runs/ablate/fmnist-table6/"
        assert backbone.startswith(prefix) and backbone[len(prefix):] in t6 and backbone.endswith(f"seed{c.seed}")

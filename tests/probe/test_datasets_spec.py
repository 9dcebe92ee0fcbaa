"""Dataset spec syntax: parsing, typed options, clear errors, the common roi_properties option."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brainalign.probe.datasets import NSDOptions, ThingsMegOptions
from brainalign.probe.datasets.spec import (
    format_spec,
    options_from_query,
    parse_int_list,
    parse_query,
    parse_spec,
    pop_common_options,
    resolve_subject,
)
from brainalign.probe.formats import load_brain


@dataclass(frozen=True)
class ToyOptions:
    subject: int | None = None
    rate: float = 1.0
    flag: bool = False
    sessions: tuple[int, ...] | None = None
    names: tuple[str, ...] = ("a",)
    mode: Literal["fast", "exact"] = "fast"
    folder: Path | None = None
    cutoff: float | None = 20.0
    label: str = "x"

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0; got {self.rate}")


def test_parse_spec_parts():
    spec = parse_spec("NSD:/data/nsd?subject=1&sessions=1-3&rois=prf-visualrois")
    assert (spec.prefix, spec.location) == ("nsd", "/data/nsd")
    assert spec.options == {"subject": "1", "sessions": "1-3", "rois": "prf-visualrois"}
    assert parse_spec("things-meg:/d?shared1000").options == {"shared1000": "true"}
    assert parse_spec(r"C:\data\nsd").prefix == ""  # a drive letter is not a loader
    plain = parse_spec("/no/such/folder?roi_properties=a.csv")
    assert (plain.prefix, plain.location, plain.options) == (
        "",
        "/no/such/folder",
        {"roi_properties": "a.csv"},
    )


def test_existing_path_with_question_mark_is_kept(tmp_path):
    odd = tmp_path / "what?.fif"
    odd.write_text("")
    assert parse_spec(str(odd)).location == str(odd)


def test_parse_query_decoding_and_errors():
    assert parse_query("a=x%26y&b=%3D") == {"a": "x&y", "b": "="}
    with pytest.raises(ValueError, match="option 'a' is given twice"):
        parse_query("a=1&a=2")
    with pytest.raises(ValueError, match="an option has no name"):
        parse_query("=3")


def test_format_spec_round_trips():
    options = {"subject": 1, "sessions": (1, 2, 5), "flag": True, "note": "a&b=c", "cut": None}
    text = format_spec("nsd", "/data/nsd", options)
    spec = parse_spec(text)
    assert spec.prefix == "nsd" and spec.location == "/data/nsd"
    assert spec.options == {
        "subject": "1", "sessions": "1,2,5", "flag": "true", "note": "a&b=c", "cut": "none"
    }  # fmt: skip


def test_int_lists():
    assert parse_int_list("1-3,7") == (1, 2, 3, 7)
    assert parse_int_list("5, 2-3 ,5") == (5, 2, 3)
    for bad in ("a", "3-1", "", "1-x"):
        with pytest.raises(ValueError, match="option 'sessions'"):
            parse_int_list(bad, name="sessions")


def test_typed_options():
    options = options_from_query(
        ToyOptions,
        {
            "subject": "2",
            "rate": "0.5",
            "flag": "yes",
            "sessions": "1-2,4",
            "names": "V1, hV4",
            "mode": "exact",
            "folder": "/tmp/x",
            "cutoff": "none",
            "label": "a b",
        },
        dataset="toy",
    )
    assert options == ToyOptions(
        subject=2,
        rate=0.5,
        flag=True,
        sessions=(1, 2, 4),
        names=("V1", "hV4"),
        mode="exact",
        folder=Path("/tmp/x"),
        cutoff=None,
        label="a b",
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"subjct": "1"}, r"unknown option\(s\) for toy: 'subjct' \(did you mean 'subject'\?\)"),
        ({"zzz": "1"}, "known options: cutoff, flag, folder"),
        ({"subject": "one"}, "toy spec: option 'subject' must be an integer; got 'one'"),
        ({"flag": "maybe"}, "option 'flag' must be true or false"),
        ({"mode": "slow"}, r"option 'mode' must be one of \['fast', 'exact'\]; got 'slow'"),
        ({"rate": "-1"}, "toy spec: rate must be >= 0"),
        ({"sessions": "1-"}, "option 'sessions': expected integers"),
        ({"cutoff": "high"}, "option 'cutoff' must be a number"),
    ],
)
def test_option_errors(raw, message):
    with pytest.raises(ValueError, match=message):
        options_from_query(ToyOptions, raw, dataset="toy")


def test_loader_option_classes_parse():
    nsd = options_from_query(
        NSDOptions, {"subject": "3", "sessions": "1-2", "rois": "streams,HCP_MMP1"}, dataset="nsd"
    )
    assert (nsd.subject, nsd.sessions, nsd.rois) == (3, (1, 2), ("streams", "HCP_MMP1"))
    meg = options_from_query(
        ThingsMegOptions, {"onsets": "events", "l_freq": "none"}, dataset="things-meg"
    )
    assert meg.onsets == "events" and meg.l_freq is None and meg.h_freq == 20.0


def test_resolve_subject():
    assert resolve_subject(1, None, dataset="nsd") == 1
    assert resolve_subject(None, "subj02", dataset="nsd") == "subj02"
    assert resolve_subject(1, "subj01", dataset="nsd") == 1
    assert resolve_subject("1", "BIGMEG1", dataset="things-meg") == "1"
    with pytest.raises(ValueError, match="the spec says subject=1 but subject='2'"):
        resolve_subject(1, "2", dataset="nsd")


def test_keyword_subject_reaches_the_loader(tmp_path):
    with pytest.raises(FileNotFoundError, match="looked for nsd_expdesign.mat"):
        load_brain(f"nsd:{tmp_path}", subject="subj02")
    with pytest.raises(ValueError, match="subject must be 1..8; got 9"):
        load_brain(f"nsd:{tmp_path}", subject="9")
    with pytest.raises(ValueError, match="spec says subject"):
        load_brain(f"nsd:{tmp_path}?subject=1", subject="3")


def test_pop_common_options():
    text, tables = pop_common_options("nsd:/d?subject=1&roi_properties=a.csv,b.csv")
    assert tables == (Path("a.csv"), Path("b.csv"))
    assert parse_spec(text).options == {"subject": "1"}
    assert pop_common_options("/no/folder?roi_properties=a.csv") == ("/no/folder", (Path("a.csv"),))
    assert pop_common_options("nsd:/d?subject=1") == ("nsd:/d?subject=1", ())
    with pytest.raises(ValueError, match="a plain path takes only"):
        pop_common_options("/no/folder?subject=1")


def write_generic_folder(folder: Path) -> None:
    (folder / "images").mkdir(parents=True)
    np.save(folder / "responses.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    pd.DataFrame({"stimulus_id": ["a", "b", "c"]}).to_csv(folder / "stimuli.csv", index=False)
    pd.DataFrame(
        {"roi": ["V1", "V1", "FFC", "FFC"], "x": [0, 2, 30, 32], "y": 0.0, "z": 0.0}
    ).to_csv(folder / "targets.csv", index=False)
    for name in "abc":
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / "images" / f"{name}.png")


def test_roi_properties_on_a_plain_folder(tmp_path):
    folder = tmp_path / "sub-01"
    write_generic_folder(folder)
    properties = tmp_path / "myelin.csv"
    pd.DataFrame({"roi": ["V1", "FFC", "MT"], "myelin": [1.5, 0.5, 1.0]}).to_csv(
        properties, index=False
    )
    with pytest.warns(UserWarning, match=r"not in the ROI table, ignored: \['MT'\]"):
        brain, _ = load_brain(f"{folder}?roi_properties={properties}")
    assert brain.rois.set_index("roi")["myelin"].to_dict() == {"V1": 1.5, "FFC": 0.5}
    with pytest.raises(FileNotFoundError, match="ROI property table"):
        load_brain(f"{folder}?roi_properties={tmp_path / 'none.csv'}")
    plain, _ = load_brain(folder)
    assert "myelin" not in plain.rois.columns


def test_load_brain_registers_named_loaders_on_its_own():
    code = (
        "from brainalign.probe import formats\n"
        "assert not formats._PREFIX_LOADERS\n"
        "try:\n"
        "    formats.load_brain('things-fmri:/no/such/folder?subject=1')\n"
        "except FileNotFoundError as error:\n"
        "    print(error)\n"
        "print(sorted(formats._PREFIX_LOADERS))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "THINGS-fMRI folder not found" in result.stdout
    assert "['algonauts2023', 'armeni2022', 'meg-masc', 'nsd', 'things-fmri', 'things-meg']" in (
        result.stdout
    )

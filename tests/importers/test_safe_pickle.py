"""The data-only unpickler: plain containers and scalars come back, any global is refused and
nothing runs."""

from __future__ import annotations

import os
import pickle
import subprocess

import pytest

from lavida_data.importers import safe_pickle
from lavida_data.importers.safe_pickle import UnsafePickleError

from .helpers import Unicode, py2_pickle

DATA = {
    "refs": [
        {"ref_id": 1, "ann_id": 2 ** 40, "split": "train", "score": 0.25, "ok": True, "none": None,
         "box": (1.5, 2, 3, 4), "sentences": [{"sent": "the man on the left", "tokens": ["the", "man"]}]},
        [], {}, (), -7, 10 ** 30, "",
    ],
}


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_of_every_protocol(protocol):
    assert safe_pickle.loads(pickle.dumps(DATA, protocol=protocol)) == DATA


def test_bytes_survive_from_protocol_3():
    obj = {"blob": b"\x00\xffabc", "text": "é"}
    assert safe_pickle.loads(pickle.dumps(obj, protocol=3)) == obj
    assert safe_pickle.loads(pickle.dumps(obj, protocol=5)) == obj


def test_python2_pickle_strings_are_decoded():
    refs = [{"sent_ids": [0, 1], "file_name": "COCO_train2014_000000000009_1.jpg", "ann_id": 1038967,
             "split": "train", "image_id": 9, "category_id": 51, "ref_id": 0,
             "sentences": [{"tokens": ["a", "b"], "raw": "Café on the left ", "sent_id": 0,
                            "sent": "cafe on the left"},
                           {"raw": Unicode("naïve bowl"), "sent": b"latin \xe9 bytes", "sent_id": 1}],
             "box": (1.5, -2, 3 * 10 ** 12, None, True)}]
    got = safe_pickle.loads(py2_pickle(refs))
    assert got == [{**refs[0], "sentences": [
        {"tokens": ["a", "b"], "raw": "Café on the left ", "sent_id": 0, "sent": "cafe on the left"},
        {"raw": "naïve bowl", "sent": "latin é bytes", "sent_id": 1}]}]  # not UTF-8: read as Latin-1
    assert all(isinstance(k, str) for k in got[0])
    raw = safe_pickle.loads(py2_pickle(refs), strings="bytes")
    assert raw[0][b"file_name"] == b"COCO_train2014_000000000009_1.jpg"


def test_protocol_0_text_pickle():
    assert safe_pickle.loads(b"(lp0\nI1\naS'abc'\np1\naF2.5\na.") == [1, "abc", 2.5]


def test_load_reads_a_file(tmp_path):
    p = tmp_path / "refs(unc).p"
    p.write_bytes(py2_pickle([{"a": 1}]))
    assert safe_pickle.load(str(p)) == [{"a": 1}]


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Popen:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", self.marker],))


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_reduce_exploit_is_refused_and_runs_nothing(tmp_path, protocol):
    marker = tmp_path / "pwned"
    p = tmp_path / "refs(unc).p"
    p.write_bytes(pickle.dumps({"refs": [_Exploit(marker)]}, protocol=protocol))
    with pytest.raises(UnsafePickleError) as e:
        safe_pickle.load(str(p))
    msg = str(e.value)
    assert str(p) in msg and "system" in msg and "refused" in msg
    assert not marker.exists()
    # the same pickle really is an exploit for an unrestricted loader
    pickle.loads(p.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("payload", [
    b"cos\nsystem\n(S'touch {m}'\ntR.",  # protocol 0 GLOBAL + REDUCE
    b"cbuiltins\neval\n(S'open(\"{m}\", \"w\")'\ntR.",
    b"c__builtin__\neval\n(S'open(\"{m}\", \"w\")'\ntR.",
    b"(cos\nsystem\nS'touch {m}'\no.",  # OBJ
    b"(S'touch {m}'\nios\nsystem\n.",  # INST
])
def test_handwritten_globals_are_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match="refused to load global"):
        safe_pickle.loads(payload.replace(b"{m}", str(marker).encode()), name="crafted.p")
    assert not marker.exists()


def test_other_non_plain_pickles_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match="refused"):
        safe_pickle.loads(pickle.dumps(_Popen(str(marker)), protocol=2))
    with pytest.raises(UnsafePickleError, match="holds a set"):
        safe_pickle.loads(pickle.dumps({1, 2}, protocol=4))  # built by an opcode, not a global
    with pytest.raises(UnsafePickleError, match="holds a bytearray"):
        safe_pickle.loads(pickle.dumps(bytearray(b"ab"), protocol=5))
    with pytest.raises(UnsafePickleError, match="persistent id"):
        safe_pickle.loads(b"\x80\x02P1\n.")
    with pytest.raises(UnsafePickleError, match="not a readable data pickle"):
        safe_pickle.loads(pickle.dumps(DATA, protocol=2)[:-10], name="cut.p")
    with pytest.raises(UnsafePickleError):
        safe_pickle.loads(pickle.dumps(1, protocol=2).replace(b"K\x01", b"\x82\x01"))  # EXT1 extension code
    assert not marker.exists()

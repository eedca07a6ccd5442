"""The one QID codec: "Q90" <-> 90, the same rules and the same error everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from mel.errors import RecordError
from mel.qids import MAX_QID_NUMBER, is_qid, parse_qids, qid_to_int, qid_to_str


def test_round_trip():
    assert qid_to_int("Q90") == 90 and qid_to_str(90) == "Q90"
    assert qid_to_int(np.int64(7)) == 7 and qid_to_str(np.int64(7)) == "Q7"
    assert qid_to_str(MAX_QID_NUMBER) == f"Q{MAX_QID_NUMBER}"


def test_what_is_an_item_id():
    assert is_qid("Q1") and not is_qid("P31") and not is_qid("q90") and not is_qid("Q090")
    assert not is_qid("Q") and not is_qid(90) and not is_qid(" Q90")
    assert is_qid(f"Q{MAX_QID_NUMBER}") and not is_qid(f"Q{MAX_QID_NUMBER + 1}")
    assert not is_qid("Q" + "9" * 40)


@pytest.mark.parametrize("bad", ["P31", "L5", "Q-1", "Q0", "", "Q9223372036854775808", 0, -3, True, "90", 2 ** 63])
def test_bad_ids_raise_record_error(bad):
    with pytest.raises(RecordError, match="not a Wikidata item"):
        qid_to_int(bad)


def test_parse_qids():
    assert parse_qids(["Q1", 2, np.int64(3)]).tolist() == [1, 2, 3]
    assert parse_qids(np.array([5, 6], dtype=np.int32)).dtype == np.int64
    with pytest.raises(RecordError, match="not a Wikidata item number: 0"):
        parse_qids(np.array([1, 0]))
    with pytest.raises(RecordError, match="'Q0'"):
        parse_qids(["Q1", "Q0"])

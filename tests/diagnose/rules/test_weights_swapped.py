import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "weights-swapped"


def test_restored_swaps(make_run):
    assert check(make_run(), ID) == []


def test_unrestored_swap_is_an_error(make_run):
    spec = healthy().event(100, "weights_swapped", kind="ema", params_changed=12,
                           restored=False, noop=False)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    assert finding.evidence["steps"] == [100] and finding.evidence["kinds"] == ["ema"]
    assert finding.evidence["swaps_total"] == 4


def test_noop_swap_is_a_warning(make_run):
    spec = healthy().event(100, "weights_swapped", kind="swa", params_changed=0,
                           restored=True, noop=True)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and "module." in finding.fix


def test_no_swaps_with_probe_listed_is_checked(make_run):
    assert check(make_run(healthy().drop_events("weights_swapped")), ID) == []


def test_no_swaps_without_probe_is_unchecked(make_run):
    spec = healthy().drop_events("weights_swapped")
    spec.manifest["probes"] = []
    with pytest.raises(Unchecked, match="could not be observed"):
        check(make_run(spec), ID)
    assert severities(check(make_run(healthy()), ID)) == []

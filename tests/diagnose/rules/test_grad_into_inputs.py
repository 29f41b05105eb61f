import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy

ID = "grad-into-inputs"


def test_detached_inputs(make_run):
    assert check(make_run(), ID) == []


def test_event_names_the_tensor(make_run):
    spec = healthy().event(7, "grad_into_inputs", tensors=["R_samp"], count=1)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["tensors"] == ["R_samp"]
    assert finding.evidence["first_step"] == 7 and "R_samp" in finding.title
    assert "detach" in finding.fix


def test_inputs_kind_counts(make_run):
    spec = healthy().update("inputs", lambda s, r: {**r, "requires_grad": 1} if s >= 50 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.evidence["input_steps"] == [[50, 190]]


def test_unchecked_without_observation(make_run):
    spec = healthy().drop("inputs")
    spec.manifest["probes"] = [{"name": "cadence"}]
    with pytest.raises(Unchecked, match="could not be observed"):
        check(make_run(spec), ID)


def test_leaf_forward_arguments_alone_are_info(make_run):
    # FGSM: the attack forward takes x.requires_grad_() on purpose
    spec = healthy().event(9, "grad_into_inputs", tensors=[], count=0, first_step=0,
                           leaf_tensors=["forward[0]"], leaf_count=10)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and finding.evidence["leaf_tensors"] == ["forward[0]"]
    assert "Adversarial" in finding.fix


def test_a_graph_beside_leaves_is_still_an_error(make_run):
    spec = healthy().event(9, "grad_into_inputs", tensors=["R_samp"], count=10, first_step=0,
                           leaf_tensors=["forward[0]"], leaf_count=10)
    assert [f.severity for f in check(make_run(spec), ID)] == ["error"]

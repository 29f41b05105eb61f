from riswb.diagnose.text import fmt, fmt_duration, fmt_evidence, pct


def test_fmt_numbers_lists_and_missing_values():
    assert fmt(None) == "-" and fmt(float("nan")) == "nan" and fmt(float("-inf")) == "-inf"
    assert fmt(3) == "3" and fmt(2.0) == "2" and fmt(0.5) == "0.5" and fmt(True) == "yes"
    assert fmt(1.5e-7) == "1.500e-07" and fmt(12345.6) == "1.235e+04"
    assert fmt([1, 2, 3, 4, 5, 6, 7]).endswith("…]") and fmt({"a": 0.25}) == "{a=0.25}"


def test_fmt_digits_serve_plot_ticks():
    assert fmt(0.05, digits=3) == "0.05" and fmt(1e-5, digits=3) == "1.00e-05"
    assert fmt(0.12345, digits=3) == "0.123"


def test_pct_evidence_and_duration():
    assert pct(0.5) == "50%" and pct(0) == "0%" and pct(0.0012) == "0.12%"
    assert fmt_evidence({f"k{i}": i for i in range(10)}, limit=2) == "k0=0; k1=1; …"
    assert fmt_duration(None) == "-" and fmt_duration(5) == "5.0s"
    assert fmt_duration(3725) == "1h02m05s"

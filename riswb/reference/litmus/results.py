"""What a litmus run returns: one `CheckResult` per check, gathered in a `LitmusResult`, and
the two formatters every check's one-line detail uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from riswb.jsonsafe import strict_json


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str  # one line, with the numbers
    evidence: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail,
                "evidence": strict_json(self.evidence), "seconds": round(self.seconds, 3)}


@dataclass
class LitmusResult:
    preset: str
    inject: str | None
    seed: int
    checks: list[CheckResult]
    seconds: float = 0.0
    expected_failures: tuple[str, ...] = ()  # the fault's `litmus` signature, if injected

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.passed]

    def __getitem__(self, name: str) -> CheckResult:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "preset": self.preset, "inject": self.inject,
                "seed": self.seed, "seconds": round(self.seconds, 3), "failed": self.failed,
                "expected_failures": list(self.expected_failures),
                "checks": [check.to_dict() for check in self.checks]}


def g3(x: float) -> str:
    """A number in a detail line: three significant digits."""
    return f"{x:.3g}"


def first_line(error: BaseException) -> str:
    """An exception as one short detail line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160] if text else ''}"

"""The shared format option: one validator, one message."""

import pytest

from riswb.commands.options import DOCUMENT_FORMATS, check_format
from riswb.errors import RiswbError


def test_check_format_normalizes_and_rejects():
    assert check_format(" JSON ") == "json"
    assert check_format("markdown", DOCUMENT_FORMATS) == "markdown"
    with pytest.raises(RiswbError, match=r"'markdown' \(choose from table, json\)"):
        check_format("markdown")

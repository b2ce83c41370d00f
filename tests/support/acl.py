"""The minimal ACL rules as docs/operations.md publishes them, read by the tests that hold the
page to what the code needs."""

from __future__ import annotations

import re

from tests.support.deploy import ROOT


def documented_acl() -> dict[str, str]:
    """user name -> its ACL rule line, from the marked block of docs/operations.md."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"<!-- acl-rules: begin -->(.*?)<!-- acl-rules: end -->", doc, re.S)
    assert block, "docs/operations.md lost its acl-rules block"
    rules = {
        line.split()[1]: line.removeprefix("user ").strip()
        for line in block.group(1).splitlines()
        if line.startswith("user ")
    }
    assert set(rules) == {"dispatcher", "celery"}, rules
    return rules


def granted(rule: str) -> set[str]:
    """The commands (lower case, ``cmd`` or ``cmd|sub``) a rule line allows with ``+``."""
    return {word[1:].lower() for word in rule.split() if word.startswith("+")}

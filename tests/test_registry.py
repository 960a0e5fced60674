"""The strategy registry is the one list: docs/strategies.md's tables, the ClientApp's handlers and the
config keys all follow from it."""

import re

from core.wire import IDENTIFY
from fl_app.client_app import app
from strategies.flower import OWN_KEYS, PREFIX
from strategies.registry import SPECS, client_handlers, strategy_keys
from tests.conftest import REPO

STRATEGIES_PAGE = (REPO / "docs" / "strategies.md").read_text()
CONFIGURATION_PAGE = (REPO / "docs" / "configuration.md").read_text()


def table_rows(heading: str) -> list[list[str]]:
    section = STRATEGIES_PAGE[STRATEGIES_PAGE.index(heading):]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_documented_strategy_table_is_the_registry():
    expected = [[f"`{s.name}`", s.summary, f"`{' '.join(f'{k}={v}' for k, v in s.study.items())}`"] for s in SPECS]
    assert table_rows("## The registered strategies") == expected


def test_the_documented_flower_table_lists_each_built_in_and_its_keys():
    expected = [[f"`{PREFIX}{n}`", ", ".join(f"`{k}`" for k in keys) or "(none)"] for n, keys in OWN_KEYS.items()]
    assert table_rows("### Flower's built-in strategies") == expected


def test_the_client_app_serves_every_registered_message_type():
    registered = {name.removesuffix(".default") for name in app._registered_funcs}
    assert registered == {*client_handlers(), IDENTIFY, "train.replicates", "evaluate.replicates"}


def test_every_strategy_key_is_a_documented_config_key():
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", CONFIGURATION_PAGE, re.M))
    assert set(strategy_keys()) <= documented

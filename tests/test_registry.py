"""The strategy registry is the one list: the README's tables, the ClientApp's handlers and the
config keys all follow from it."""

import re

from core.wire import IDENTIFY
from fl_app.client_app import app
from strategies.flower import OWN_KEYS, PREFIX
from strategies.registry import SPECS, client_handlers, strategy_keys
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def table_rows(heading: str) -> list[list[str]]:
    section = README[README.index(heading):]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_readme_strategy_table_is_the_registry():
    expected = [[f"`{s.name}`", s.summary, f"`{' '.join(f'{k}={v}' for k, v in s.study.items())}`"] for s in SPECS]
    assert table_rows("## Strategies") == expected


def test_the_readme_flower_table_lists_each_built_in_and_its_keys():
    expected = [[f"`{PREFIX}{n}`", ", ".join(f"`{k}`" for k in keys) or "(none)"] for n, keys in OWN_KEYS.items()]
    assert table_rows("### Flower's built-in strategies") == expected


def test_the_client_app_serves_every_registered_message_type():
    registered = {name.removesuffix(".default") for name in app._registered_funcs}
    assert registered == {*client_handlers(), IDENTIFY, "train.replicates", "evaluate.replicates"}


def test_every_strategy_key_is_a_readme_config_key():
    documented = set(re.findall(r"^\| `([a-z0-9-]+)` \|", README, re.M))
    assert set(strategy_keys()) <= documented

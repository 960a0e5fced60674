"""US Census Bureau regions and divisions of the states and DC (PR belongs to none).

Clusters that follow geography would agree with these; the study measures that agreement.
"""

from __future__ import annotations

# division -> (region, member states), as the Census Bureau defines them.
DIVISIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "New England": ("Northeast", ("CT", "MA", "ME", "NH", "RI", "VT")),
    "Middle Atlantic": ("Northeast", ("NJ", "NY", "PA")),
    "East North Central": ("Midwest", ("IL", "IN", "MI", "OH", "WI")),
    "West North Central": ("Midwest", ("IA", "KS", "MN", "MO", "ND", "NE", "SD")),
    "South Atlantic": ("South", ("DC", "DE", "FL", "GA", "MD", "NC", "SC", "VA", "WV")),
    "East South Central": ("South", ("AL", "KY", "MS", "TN")),
    "West South Central": ("South", ("AR", "LA", "OK", "TX")),
    "Mountain": ("West", ("AZ", "CO", "ID", "MT", "NM", "NV", "UT", "WY")),
    "Pacific": ("West", ("AK", "CA", "HI", "OR", "WA")),
}
DIVISION: dict[str, str] = {s: d for d, (_, states) in DIVISIONS.items() for s in states}
REGION: dict[str, str] = {s: r for r, states in DIVISIONS.values() for s in states}


def client_state(label: str) -> str:
    """The state of a client label: 'CA' for 'CA' and for a shard 'CA-3'."""
    return label.split("-", 1)[0]

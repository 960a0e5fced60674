"""The bottom layer both sides share: parameters, the wire format, confusion counts, tasks."""

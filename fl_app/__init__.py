"""Thin Flower wiring: run config to components."""

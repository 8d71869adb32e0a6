"""Delivering recorded taps to the attendance server: profiles build requests, client sends."""

"""Checks for developers and CI; nothing here runs in the daemons."""

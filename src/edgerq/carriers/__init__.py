"""Carriers: how a pipe travels between SP and SC.

Each carrier offers ``listen`` (SC side) and ``dial`` (SP side) and hands the
daemons a ``MuxPipe``-shaped object; no daemon code depends on the carrier.
"""

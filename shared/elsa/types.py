"""Identifier types shared by every tier."""

from __future__ import annotations

from typing import NewType

NodeId = NewType("NodeId", str)
RunId = NewType("RunId", str)
RoundId = NewType("RoundId", int)
ClusterId = NewType("ClusterId", int)
SessionId = NewType("SessionId", str)

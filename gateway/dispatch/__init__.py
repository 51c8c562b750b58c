"""Dispatch: emergency pushes of live cameras to stations, and the events channel."""

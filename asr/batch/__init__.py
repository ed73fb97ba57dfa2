"""Offline batch transcription."""

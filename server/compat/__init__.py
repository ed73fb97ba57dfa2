"""Compatibility endpoints for existing ASR clients: WeNet, FunASR, Vosk."""

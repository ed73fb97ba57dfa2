"""Importers that turn models trained elsewhere into tingxie model directories.

- `asr.importers.wenet`: WeNet U2/U2++ Conformer experiment folders (`tingxie import-wenet`).
"""

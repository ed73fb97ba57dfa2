"""Readable transcripts: punctuation, inverse text normalisation, display tokens."""

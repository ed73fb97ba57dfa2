"""Whisper's encoder (and decoder, for rescoring) in torch, read from a CTranslate2 model.

`ct2` reads CTranslate2's binary `model.bin`; `features` reproduces Whisper's log-mel front
end; `model` holds the torch modules and the mapping from CTranslate2 variable names.
"""

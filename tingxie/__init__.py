"""The `tingxie` command line: the top layer over `asr` (recognition) and `server`."""

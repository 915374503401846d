"""Pure frame codecs: parse and build, no I/O."""

"""Reading layers: decompression streams, tar members without copying file data, and
flattening into one tree."""

"""What an image is: records (manifest, config, layers), blobs, digests and the cache."""

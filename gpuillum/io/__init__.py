"""Reading and writing images, plate discovery, atomic writes and manifests."""

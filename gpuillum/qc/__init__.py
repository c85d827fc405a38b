"""Quality-control metrics and pictures that show whether a correction worked."""

"""What a run reads: image records and problems, plate layouts and patterns, LoadData CSVs,
folders of images and multi-page stacks (``discover`` finds them all)."""

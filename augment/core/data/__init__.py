"""Reading the input: image folders, CSVs and IDX files, the input's fingerprint, the folder survey, and the splits."""

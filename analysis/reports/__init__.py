"""Reports of the trial's analysis (PDF)."""

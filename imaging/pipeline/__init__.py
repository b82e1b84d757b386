"""The image pipeline as plain modules (no Django): recognise a file from its
bytes, validate it, de-identify it, measure it and render previews. The
imaging services call it; benchmarks and tests call it directly."""

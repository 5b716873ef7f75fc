"""Networks: a 2D/3D U-Net with optional deep (per-decoder-depth) heads and extra output heads."""

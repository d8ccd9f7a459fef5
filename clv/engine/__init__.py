"""Pure numpy/scipy customer-lifetime-value engine (no Django): summaries, BG/NBD, MBG/NBD, Gamma-Gamma, CLV, holdout checks."""

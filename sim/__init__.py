"""Emulated devices (TI radar, DCA1000, RealSense) and the scene simulator that drives them."""

"""TI mmWave: cfg files, CLI port, UART TLV stream, DCA1000 raw ADC, DSP."""

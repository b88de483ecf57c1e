"""Camera drivers: RealSense (pyrealsense2), OpenCV VideoCapture, emulated RealSense, generator."""

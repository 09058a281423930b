"""Data: the default data set and the one preprocessing path shared by training,
calibration and serving."""

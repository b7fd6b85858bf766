"""What every suite that runs real `secureconf` processes shares (see nodeproc)."""

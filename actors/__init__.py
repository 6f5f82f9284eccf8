"""Ray actors (thin shells in runtime.py) and the plain cores they forward to."""

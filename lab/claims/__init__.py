"""`make claims`: folklore about threads, green threads and event loops, measured on this machine."""
